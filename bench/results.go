package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

type metric struct {
	Unit  string
	Value float64
}

// result is one measurement: one system (or consumer configuration) in one phase of
// one round.
type result struct {
	Phase   string // Enqueue, Drain, Latency
	Label   string // system, or consumer configuration
	N       int    // transactions, events, or latency samples
	Metrics []metric
	samples []float64 // latency, sorted
}

func (r result) value(unit string) float64 {
	for _, m := range r.Metrics {
		if m.Unit == unit {
			return m.Value
		}
	}
	return math.NaN()
}

// line is r as a Go benchmark result line, for benchstat (-col /system).
func (r result) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Benchmark%s/system=%s \t%8d", r.Phase, r.Label, max(r.N, 1))
	for _, m := range r.Metrics {
		fmt.Fprintf(&b, " \t%12.2f %s", m.Value, m.Unit)
	}
	return b.String()
}

// canonical orders a round's results by phase, then baseline first.
func canonical(rs []result, o options) []result {
	rank := map[string]int{}
	for i, n := range systemOrder {
		rank["Enqueue/"+n] = i
		for _, rate := range o.latencyRates {
			rank[fmt.Sprintf("Latency/rate=%d/%s", rate, n)] = i
		}
	}
	for i, sp := range o.drainSpecs {
		rank["Drain/"+sp.V.Label] = i
	}
	phase := map[string]int{"Enqueue": 0, "Drain": 1}
	for i, rate := range o.latencyRates {
		phase[fmt.Sprintf("Latency/rate=%d", rate)] = 2 + i
	}
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b result) int {
		if d := phase[a.Phase] - phase[b.Phase]; d != 0 {
			return d
		}
		return rank[a.Phase+"/"+a.Label] - rank[b.Phase+"/"+b.Label]
	})
	return out
}

// results gathers every round, keeping each round's values aligned so that ratios are
// taken within a round.
type results struct {
	rounds []map[string]result // per round: phase/label → result
	labels map[string][]string // phase → labels in first-seen order
}

func newResults() *results { return &results{labels: map[string][]string{}} }

func (rs *results) add(round []result) {
	m := map[string]result{}
	for _, r := range round {
		m[r.Phase+"/"+r.Label] = r
		if !slices.Contains(rs.labels[r.Phase], r.Label) {
			rs.labels[r.Phase] = append(rs.labels[r.Phase], r.Label)
		}
	}
	rs.rounds = append(rs.rounds, m)
}

// values of one metric across rounds (NaN where missing).
func (rs *results) values(phase, label, unit string) []float64 {
	var out []float64
	for _, m := range rs.rounds {
		if r, ok := m[phase+"/"+label]; ok {
			out = append(out, r.value(unit))
		}
	}
	return out
}

// ratios of a/b within each round.
func (rs *results) ratios(phase, a, b, unit string) []float64 {
	var out []float64
	for _, m := range rs.rounds {
		ra, okA := m[phase+"/"+a]
		rb, okB := m[phase+"/"+b]
		if okA && okB && rb.value(unit) > 0 {
			out = append(out, ra.value(unit)/rb.value(unit))
		}
	}
	return out
}

// best is the label among labels that starts with prefix and has the highest median
// of unit in phase, or "" when none starts with it.
func (rs *results) best(phase string, labels []string, prefix, unit string) string {
	best, rate := "", math.Inf(-1)
	for _, l := range labels {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		if m := median(rs.values(phase, l, unit)); best == "" || m > rate {
			best, rate = l, m
		}
	}
	return best
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(v []float64, format string) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf(format+"–"+format, slices.Min(v), slices.Max(v))
}

// bytesCell prints a WAL figure in whole bytes, or to two decimals below 10 bytes: the
// log's drain writes one cursor row per batch, a fraction of a byte per event.
func bytesCell(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func ratioCell(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("**%.2f×** (%s)", median(v), spread(v, "%.2f"))
}

// summary is the markdown table of the run: medians over rounds, the range over
// rounds, and within-round ratios (median, with their range).
func (rs *results) summary(o options, m machine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Summary: %d rounds; %d cores, %s; PostgreSQL %s\n\n", len(rs.rounds), m.NProc, m.CPU, m.PG)
	if labels := rs.labels["Enqueue"]; len(labels) > 0 {
		fmt.Fprintf(&b, "### Enqueue: business row + event per transaction, %d writers\n\n", o.writers)
		b.WriteString("| system | txn/s (median) | range over rounds | ÷ plain 2-row | outbox ÷ system | WAL bytes/txn |\n|---|--:|--:|--:|--:|--:|\n")
		for _, l := range labels {
			v := rs.values("Enqueue", l, "txn/s")
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %.0f |\n", l, median(v), spread(v, "%.0f"),
				ratioCell(rs.ratios("Enqueue", l, "plain", "txn/s")), ratioCell(rs.ratios("Enqueue", "outbox", l, "txn/s")),
				median(rs.values("Enqueue", l, "WAL-B/txn")))
		}
		b.WriteString("\n")
	}
	if labels := rs.labels["Drain"]; len(labels) > 0 {
		ours := rs.best("Drain", labels, "outbox", "events/s")
		river := rs.best("Drain", labels, "river", "events/s")
		specOf := map[string]spec{}
		for _, sp := range o.drainSpecs {
			specOf[sp.V.Label] = sp
		}
		fmt.Fprintf(&b, "### Drain: %d-event backlog to a no-op receiver\n\n", o.drainEvents)
		b.WriteString("The limit column reads each consumer against the bare loop of its layout's own statements (limit-b… for the outbox, log-limit-b… for the log).\n\n")
		fmt.Fprintf(&b, "| consumer | events/s (median) | range over rounds | %s ÷ consumer | consumer ÷ %s | consumer ÷ its limit | WAL bytes/event |\n|---|--:|--:|--:|--:|--:|--:|\n",
			cmp.Or(ours, "outbox"), cmp.Or(river, "river"))
		for _, l := range labels {
			v := rs.values("Drain", l, "events/s")
			limit := "–"
			if sp, ok := specOf[l]; ok {
				if lim := limitOf(sp, o.drainSpecs); lim != "" {
					limit = lim + ": " + ratioCell(rs.ratios("Drain", l, lim, "events/s"))
				}
			}
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s |\n", l, median(v), spread(v, "%.0f"),
				ratioCell(rs.ratios("Drain", ours, l, "events/s")), ratioCell(rs.ratios("Drain", l, river, "events/s")),
				limit, bytesCell(median(rs.values("Drain", l, "WAL-B/event"))))
		}
		b.WriteString("\n")
	}
	if len(rs.labels["Enqueue"])+len(rs.labels["Drain"]) > 0 {
		b.WriteString("### CPU per transaction (enqueue) or event (drain), µs, medians over rounds\n\n")
		b.WriteString("Client: this process (writers, or relays and receiver). Server: the PostgreSQL backends on the benchmark's database (from /proc; the WAL writer and checkpointer are not counted).\n\n")
		b.WriteString("| phase | system | client µs | server µs |\n|---|---|--:|--:|\n")
		for _, phase := range []string{"Enqueue", "Drain"} {
			for _, l := range rs.labels[phase] {
				fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f |\n", phase, l, median(rs.values(phase, l, "client-cpu-us/op")), median(rs.values(phase, l, "server-cpu-us/op")))
			}
		}
		b.WriteString("\n")
	}
	for _, rate := range o.latencyRates {
		phase := fmt.Sprintf("Latency/rate=%d", rate)
		labels := rs.labels[phase]
		if len(labels) == 0 {
			continue
		}
		fmt.Fprintf(&b, "### Latency: commit to delivery at each system's defaults, %d events/s (Poisson), one per transaction\n\n", rate)
		b.WriteString("| system | p50 ms (median) | p99 ms (median) | p99 range over rounds | all rounds pooled: p50 / p99 / max ms | a 1 ms sleep's overrun, p99 (median) |\n|---|--:|--:|--:|--:|--:|\n")
		for _, l := range labels {
			var pooled []float64
			for _, r := range rs.rounds {
				pooled = append(pooled, r[phase+"/"+l].samples...)
			}
			slices.Sort(pooled)
			p99 := rs.values(phase, l, "p99-ms")
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %s | %.1f / %.1f / %.1f | %.1f |\n", l, median(rs.values(phase, l, "p50-ms")), median(p99), spread(p99, "%.1f"),
				quantile(pooled, 0.5), quantile(pooled, 0.99), quantile(pooled, 1), median(rs.values(phase, l, "late-p99-ms")))
		}
		b.WriteString("\n")
	}
	return b.String()
}
