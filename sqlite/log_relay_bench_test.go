package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// acceptAll is a BatchHandler that takes every event and counts its calls.
type acceptAll struct{ calls, events atomic.Int64 }

func (a *acceptAll) Handle(context.Context, outbox.Event) error {
	a.calls.Add(1)
	a.events.Add(1)
	return nil
}

func (a *acceptAll) HandleBatch(_ context.Context, events []outbox.Event) []error {
	a.calls.Add(1)
	a.events.Add(int64(len(events)))
	return make([]error, len(events))
}

func benchEvents(n int, keyed bool) []*outbox.Event {
	events := make([]*outbox.Event, n)
	for i := range events {
		e := outbox.NewEvent("order.created", fmt.Sprintf("entity-%d", i), "u")
		e.Payload = []byte(`{"quantity":72.5}`)
		e.Metadata = map[string]string{"source": "manual_entry"}
		if keyed {
			e.OrderingKey = e.EntityID
		}
		events[i] = e
	}
	return events
}

// BenchmarkLogRelayDrain drains logRelayDrainPerRound events per variant and round,
// 1,000 at a time, into a BatchHandler that accepts everything; each variant has a
// database file of its own, filled before the round (untimed). The variants take turns
// batch by batch, in an order rotated from turn to turn, so that a change of the
// machine's load hits them alike. Reported: the median rates, and the medians of the
// within-round ratios relay ÷ processor and relay ÷ cursor.
//
//	processor  today's Processor.Drain on the table layout (claim, deliver, settle)
//	relay      LogRelay.Drain (read, lease, key lookup, deliver, one commit per batch)
//	cursor     LogCursor Read + Ack in a bare loop, no delivery: the relay's limit
//
// keys=entity gives each event its entity as ordering key; keys=none gives none.
func BenchmarkLogRelayDrain(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		name := "keys=none"
		if keyed {
			name = "keys=entity"
		}
		b.Run(name, func(b *testing.B) { benchLogRelayDrain(b, keyed) })
	}
}

const logRelayDrainPerRound = 10000

func benchLogRelayDrain(b *testing.B, keyed bool) {
	ctx := context.Background()
	type variant struct {
		name  string
		fill  func(n int)
		batch func() int // one batch of at most 1,000; how many events it took
		rates []float64
	}
	fillLog := func(env relayEnv) func(int) {
		return func(n int) {
			events := benchEvents(n, keyed)
			for len(events) > 0 {
				chunk := events[:min(len(events), 500)]
				events = events[len(chunk):]
				if err := env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, chunk...) }); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	pEnv := newRelayEnv(b)
	p, err := outbox.NewProcessor(pEnv.store, &acceptAll{}, outbox.Config{BatchSize: 1000, Logger: outboxtest.Discard})
	if err != nil {
		b.Fatal(err)
	}
	processor := &variant{name: "processor",
		fill: func(n int) {
			if err := pEnv.store.Enqueue(ctx, time.Now(), benchEvents(n, keyed)...); err != nil {
				b.Fatal(err)
			}
		},
		batch: func() int {
			n, err := p.ProcessBatch(ctx)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}}
	rEnv := newRelayEnv(b)
	r := rEnv.relay(b, &acceptAll{}, sqlite.LogRelayConfig{BatchSize: 1000})
	relay := &variant{name: "relay", fill: fillLog(rEnv), batch: func() int {
		st, err := r.Step(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return st.Delivered
	}}
	cEnv := newRelayEnv(b)
	c, err := cEnv.log.Cursor(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	cursor := &variant{name: "cursor", fill: fillLog(cEnv), batch: func() int {
		batch, err := c.Read(ctx, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Ack(ctx, batch); err != nil {
			b.Fatal(err)
		}
		return len(batch.Events)
	}}
	variants := []*variant{processor, relay, cursor}
	for _, v := range variants { // warm up
		v.fill(1000)
		for v.batch() > 0 {
		}
	}
	var relayVsProcessor, relayVsCursor []float64
	b.ResetTimer()
	for round := range b.N {
		b.StopTimer()
		for _, v := range variants {
			v.fill(logRelayDrainPerRound)
		}
		b.StartTimer()
		spent := map[string]time.Duration{}
		for turn := range logRelayDrainPerRound / 1000 {
			for k := range variants {
				v := variants[(k+turn+round)%len(variants)]
				started := time.Now()
				if n := v.batch(); n != 1000 {
					b.Fatalf("%s took %d events, want a full batch of 1,000", v.name, n)
				}
				spent[v.name] += time.Since(started)
			}
		}
		for _, v := range variants {
			v.rates = append(v.rates, logRelayDrainPerRound/spent[v.name].Seconds())
		}
		relayVsProcessor = append(relayVsProcessor, spent["processor"].Seconds()/spent["relay"].Seconds())
		relayVsCursor = append(relayVsCursor, spent["cursor"].Seconds()/spent["relay"].Seconds())
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(logBenchMedian(v.rates), v.name+"-events/s")
		b.Logf("%s: events/s %v", v.name, logBenchRounded(v.rates))
	}
	b.ReportMetric(logBenchMedian(relayVsProcessor), "relay/processor")
	b.ReportMetric(logBenchMedian(relayVsCursor), "relay/cursor")
	b.Logf("relay ÷ processor %v; relay ÷ cursor %v", logBenchRounded(relayVsProcessor), logBenchRounded(relayVsCursor))
}

// BenchmarkLogRelayLatency measures the SQLite LogRelay's wake-ups: how long after an
// appender's commit its event reaches the handler, what an idle relay costs, and what
// the relay's commits (its acks) cost the application's writers. Each b.N iteration
// is one round.
//
// rate=10 and rate=100: an appender commits single-event transactions at Poisson
// arrivals of that many a second (the same arrival times for every variant of a
// round), and each variant's relay, on a file of its own, delivers them; the variants
// run one after another in an order rotated from round to round. Latency is from the
// return of the appender's Commit to the handler's call.
//
//   - hint: the appender commits with Log.Transact in the relay's process; head polls
//     are off, so only the in-process wake-up brings the event.
//   - poll: the appender is on a pool of its own and tells nobody (as another process
//     would); the relay has the default config, so its head poll finds the commit.
//
// It reports per variant the median over rounds of p50 and p99, the worst round's p99,
// and in how many rounds both of the targets (p50 < 2 ms, p99 < 10 ms) held.
// OUTBOX_LOG_LATENCY_EVENTS sets the events per variant and round (default 50 at
// 10/s, 300 at 100/s).
//
// idle: a relay with nothing to deliver, OUTBOX_LOG_IDLE_SECONDS (2 by default) per
// variant and round, head polls every 1, 2 or 5 ms, or off (a step every
// PollInterval); and none, no relay at all, the process's baseline: this process's CPU
// time per second (getrusage), and per head poll net of the baseline.
//
// writers: an application writer commits one-row transactions with an appended event
// back to back (2,000 per variant and round), alone, and while a relay in the same
// process delivers what it appends: the writer's rate with the relay ÷ alone (within
// rounds), its p99 commit time (BEGIN IMMEDIATE to COMMIT), the relay's commits, and
// their waits for the write lock (p50, p99 and max over all rounds, from the Ack's
// first try to the lock); relay has the default config, relay-nopoll no head polls (it
// steps every PollInterval, so fewer and larger batches). Each -busyhandler variant's
// Ack waits for the lock in the pool's busy handler instead, as before its wait was
// bounded by the lease: the comparison within rounds.
func BenchmarkLogRelayLatency(b *testing.B) {
	for _, rate := range []float64{10, 100} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) { benchLogRelayLatency(b, rate) })
	}
	b.Run("idle", benchLogRelayIdle)
	b.Run("writers", benchLogRelayWriters)
}

// firstDeliveries records when each event was first handed to the handler.
type firstDeliveries struct {
	mu     sync.Mutex
	at     map[string]time.Time
	signal chan struct{}
}

func newFirstDeliveries() *firstDeliveries {
	return &firstDeliveries{at: map[string]time.Time{}, signal: make(chan struct{}, 1)}
}

func (f *firstDeliveries) Handle(_ context.Context, e outbox.Event) error {
	now := time.Now()
	f.mu.Lock()
	if _, ok := f.at[e.ID]; !ok {
		f.at[e.ID] = now
	}
	f.mu.Unlock()
	select {
	case f.signal <- struct{}{}:
	default:
	}
	return nil
}

func (f *firstDeliveries) await(b *testing.B, ids []string) {
	timeout := time.After(time.Minute)
	for {
		f.mu.Lock()
		missing := slices.ContainsFunc(ids, func(id string) bool { _, ok := f.at[id]; return !ok })
		f.mu.Unlock()
		if !missing {
			return
		}
		select {
		case <-f.signal:
		case <-timeout:
			b.Fatal("events not delivered within a minute")
		}
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func benchLogRelayLatency(b *testing.B, rate float64) {
	ctx := context.Background()
	n := 50
	if rate >= 100 {
		n = 300
	}
	if s := os.Getenv("OUTBOX_LOG_LATENCY_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	type variant struct {
		name       string
		env, other relayEnv
		cfg        sqlite.LogRelayConfig
		commit     func(e *outbox.Event) error
		p50, p99   []float64 // ms
		met        int
	}
	newVariant := func(name string) *variant {
		v := &variant{name: name, env: newRelayEnv(b)}
		switch name {
		case "hint":
			v.cfg.HeadPollInterval = -1
			v.commit = func(e *outbox.Event) error {
				return v.env.log.Transact(ctx, func(tx *sql.Tx) error { return v.env.log.AppendTx(ctx, tx, e) })
			}
		case "poll":
			v.other = openRelayEnv(b, v.env.path)
			v.commit = func(e *outbox.Event) error {
				tx, err := v.other.db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer tx.Rollback()
				if err := v.other.log.AppendTx(ctx, tx, e); err != nil {
					return err
				}
				return tx.Commit()
			}
		}
		return v
	}
	variants := []*variant{newVariant("hint"), newVariant("poll")}
	rnd := rand.New(rand.NewPCG(7, 11))
	b.ResetTimer()
	for round := range b.N {
		gaps := make([]time.Duration, n)
		for i := range gaps {
			gaps[i] = time.Duration(rnd.ExpFloat64() / rate * float64(time.Second))
		}
		for k := range variants {
			v := variants[(k+round)%len(variants)]
			rec := newFirstDeliveries()
			cfg := v.cfg
			cfg.Logger = outboxtest.Discard
			r, err := sqlite.NewLogRelay(ctx, v.env.log, v.env.store, rec, cfg)
			if err != nil {
				b.Fatal(err)
			}
			rctx, stop := context.WithCancel(ctx)
			var run sync.WaitGroup
			run.Go(func() { _ = r.Run(rctx) })
			committed := map[string]time.Time{}
			var ids []string
			next := time.Now()
			for i := range n {
				next = next.Add(gaps[i])
				time.Sleep(time.Until(next)) // the arrival process, not a wait for an outcome
				e := outbox.NewEvent("order.created", fmt.Sprintf("e-%d", i), "u")
				if err := v.commit(e); err != nil {
					b.Fatal(err)
				}
				committed[e.ID] = time.Now()
				ids = append(ids, e.ID)
			}
			rec.await(b, ids)
			stop()
			run.Wait()
			lat := make([]time.Duration, 0, n)
			for _, id := range ids {
				lat = append(lat, rec.at[id].Sub(committed[id]))
			}
			slices.Sort(lat)
			p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
			v.p50 = append(v.p50, float64(p50.Microseconds())/1000)
			v.p99 = append(v.p99, float64(p99.Microseconds())/1000)
			if p50 < 2*time.Millisecond && p99 < 10*time.Millisecond {
				v.met++
			}
			b.Logf("round %d %s: p50 %s p99 %s max %s", round, v.name, p50, p99, lat[len(lat)-1])
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(logBenchMedian(v.p50), v.name+"-p50-ms")
		b.ReportMetric(logBenchMedian(v.p99), v.name+"-p99-ms")
		b.ReportMetric(slices.Max(v.p99), v.name+"-worst-p99-ms")
		b.ReportMetric(float64(v.met), v.name+"-rounds-on-target")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchLogRelayIdle(b *testing.B) {
	ctx := context.Background()
	seconds := 2.0
	if s := os.Getenv("OUTBOX_LOG_IDLE_SECONDS"); s != "" {
		var err error
		if seconds, err = strconv.ParseFloat(s, 64); err != nil {
			b.Fatal(err)
		}
	}
	d := time.Duration(seconds * float64(time.Second))
	type variant struct {
		name string
		head time.Duration
		cpu  []float64 // ms of CPU per second
	}
	variants := []*variant{{name: "head=1ms", head: time.Millisecond}, {name: "head=2ms", head: 2 * time.Millisecond},
		{name: "head=5ms", head: 5 * time.Millisecond}, {name: "off", head: -1}, {name: "none"}}
	env := newRelayEnv(b)
	env.appendNames(b, "warm/1")
	b.ResetTimer()
	for round := range b.N {
		for k := range variants {
			v := variants[(k+round)%len(variants)]
			if v.name == "none" { // the process's own CPU, with no relay: the baseline
				started := cpuTime()
				time.Sleep(d)
				v.cpu = append(v.cpu, float64((cpuTime()-started).Microseconds())/1000/seconds)
				continue
			}
			r, err := sqlite.NewLogRelay(ctx, env.log, env.store, &acceptAll{}, sqlite.LogRelayConfig{HeadPollInterval: v.head, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Drain(ctx); err != nil { // idle from here on
				b.Fatal(err)
			}
			before := readCursorRow(b, env.db, sqlite.DefaultLogRelayCursor)
			rctx, stop := context.WithTimeout(ctx, d)
			started := cpuTime()
			_ = r.Run(rctx)
			spent := cpuTime() - started
			stop()
			after := readCursorRow(b, env.db, sqlite.DefaultLogRelayCursor)
			if after.after != before.after || after.updated != before.updated {
				b.Fatalf("%s: an idle relay moved its cursor: %+v -> %+v", v.name, before, after)
			}
			v.cpu = append(v.cpu, float64(spent.Microseconds())/1000/seconds)
		}
	}
	b.StopTimer()
	for _, v := range variants {
		cpu := logBenchMedian(v.cpu)
		b.ReportMetric(cpu, v.name+"-cpu-ms/s")
		if v.head > 0 {
			polls := float64(time.Second / v.head)
			b.ReportMetric((cpu-logBenchMedian(variants[len(variants)-1].cpu))*1000/polls, v.name+"-net-cpu-µs/poll")
		}
		b.Logf("%s: CPU ms/s %v", v.name, logBenchRounded(v.cpu))
	}
}

func benchLogRelayWriters(b *testing.B) {
	ctx := context.Background()
	const perRound = 2000
	type variant struct {
		name        string
		env         relayEnv
		relay       bool
		busyHandler bool // the Ack waits in the pool's busy handler, as before its bounded wait
		cfg         sqlite.LogRelayConfig
		rates       []float64
		p99         []float64 // ms
		commits     []float64 // the relay's Acks per round, each a wait for the lock
		events      []float64 // events delivered per round
		waits       []time.Duration
		waitMu      sync.Mutex
	}
	newVariant := func(name string, relay, busyHandler bool, cfg sqlite.LogRelayConfig) *variant {
		cfg.Logger = outboxtest.Discard
		v := &variant{name: name, env: newRelayEnv(b), relay: relay, busyHandler: busyHandler, cfg: cfg}
		if _, err := v.env.db.Exec(`CREATE TABLE app_rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		return v
	}
	nopoll := sqlite.LogRelayConfig{HeadPollInterval: -1}
	variants := []*variant{newVariant("alone", false, false, sqlite.LogRelayConfig{}),
		newVariant("relay", true, false, sqlite.LogRelayConfig{}), newVariant("relay-busyhandler", true, true, sqlite.LogRelayConfig{}),
		newVariant("relay-nopoll", true, false, nopoll), newVariant("relay-nopoll-busyhandler", true, true, nopoll)}
	ratios := map[string][]float64{}
	b.ResetTimer()
	for round := range b.N {
		spent := map[string]time.Duration{}
		for k := range variants {
			v := variants[(k+round)%len(variants)]
			h := &acceptAll{}
			waitsBefore := len(v.waits)
			var run sync.WaitGroup
			rctx, stop := context.WithCancel(ctx)
			if v.relay {
				r, err := sqlite.NewLogRelay(ctx, v.env.log, v.env.store, h, v.cfg)
				if err != nil {
					b.Fatal(err)
				}
				if v.busyHandler {
					r.AckInBusyHandler()
				}
				r.OnAckWait(func(d time.Duration) {
					v.waitMu.Lock()
					v.waits = append(v.waits, d)
					v.waitMu.Unlock()
				})
				run.Go(func() { _ = r.Run(rctx) })
			}
			commits := make([]time.Duration, perRound)
			started := time.Now()
			for i := range perRound {
				t0 := time.Now()
				tx, err := v.env.db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.Exec(`INSERT INTO app_rows (body) VALUES (?)`, "row"); err != nil {
					b.Fatal(err)
				}
				if err := v.env.log.AppendTx(ctx, tx, outbox.NewEvent("order.created", "e", "u")); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				commits[i] = time.Since(t0)
			}
			spent[v.name] = time.Since(started)
			stop()
			run.Wait()
			slices.Sort(commits)
			v.rates = append(v.rates, perRound/spent[v.name].Seconds())
			v.p99 = append(v.p99, float64(percentile(commits, 0.99).Microseconds())/1000)
			v.waitMu.Lock()
			v.commits = append(v.commits, float64(len(v.waits)-waitsBefore))
			v.waitMu.Unlock()
			v.events = append(v.events, float64(h.events.Load()))
		}
		for _, v := range variants[1:] {
			ratios[v.name] = append(ratios[v.name], spent["alone"].Seconds()/spent[v.name].Seconds())
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(logBenchMedian(v.rates), v.name+"-txn/s")
		b.ReportMetric(logBenchMedian(v.p99), v.name+"-p99-ms")
		b.Logf("%s: txn/s %v, p99 ms %v", v.name, logBenchRounded(v.rates), logBenchRounded(v.p99))
	}
	for _, v := range variants[1:] {
		b.ReportMetric(logBenchMedian(v.commits), v.name+"-commits/round")
		b.ReportMetric(logBenchMedian(ratios[v.name]), v.name+"/alone")
		b.ReportMetric(logBenchMedian(v.events), v.name+"-events/round")
		b.Logf("writer with %s ÷ alone %v; relay commits per round %v, events delivered %v", v.name,
			logBenchRounded(ratios[v.name]), v.commits, v.events)
		// The relay's waits for the write lock, over all rounds.
		slices.Sort(v.waits)
		if len(v.waits) == 0 {
			continue
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(percentile(v.waits, 0.5)), v.name+"-ackwait-p50-ms")
		b.ReportMetric(ms(percentile(v.waits, 0.99)), v.name+"-ackwait-p99-ms")
		b.ReportMetric(ms(v.waits[len(v.waits)-1]), v.name+"-ackwait-max-ms")
		b.Logf("%s: %d acks, wait for the lock p50 %s p99 %s max %s", v.name, len(v.waits),
			percentile(v.waits, 0.5), percentile(v.waits, 0.99), v.waits[len(v.waits)-1])
	}
}
