package metrics_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// The alert rules shipped beside the package, and their promtool tests.
var (
	rulesFile     = filepath.Join("rules", "outbox.rules.yml")
	rulesTestFile = filepath.Join("rules", "outbox.rules_test.yml")
)

// A fresh Metrics exports every outcome at 0, before any delivery: a rate or an increase
// over it is 0, not empty, and the first give-up is an increase the rules see. After the
// first refresh (of a LogMetrics too), every metric the rules name is there; outbox_destination_held only while
// something is held (no series is "nothing held").
func TestFreshMetricsExportWhatTheRulesRead(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	const fresh = `
# HELP outbox_outcomes_total Delivery outcomes of all types, by result: delivered, failed (will be retried), given_up, released (handed back uncounted), unavailable (the destination's fault). Every result is exported from the start.
# TYPE outbox_outcomes_total counter
outbox_outcomes_total{result="delivered"} 0
outbox_outcomes_total{result="failed"} 0
outbox_outcomes_total{result="given_up"} 0
outbox_outcomes_total{result="released"} 0
outbox_outcomes_total{result="unavailable"} 0
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 0
# HELP outbox_stats_refresh_errors_total Refreshes of the gauges that failed.
# TYPE outbox_stats_refresh_errors_total counter
outbox_stats_refresh_errors_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fresh),
		"outbox_outcomes_total", "outbox_circuit_open", "outbox_stats_refresh_errors_total"); err != nil {
		t.Fatal(err)
	}

	if err := m.Refresh(context.Background(), sqlitetest.NewStore(t)); err != nil {
		t.Fatal(err)
	}
	// A relay on the log layout has the log's gauges too (the rules on them stay quiet
	// where they are absent).
	lm, err := metrics.NewLog(reg, metrics.LogConfig{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := lm.Refresh(context.Background(), waitingSource{}); err != nil {
		t.Fatal(err)
	}
	exported := gatheredNames(t, reg)
	named := metricsNamedByRules(t)
	for _, name := range named {
		if name != "outbox_destination_held" && !slices.Contains(exported, name) {
			t.Errorf("%s names %s, which a refreshed fresh Metrics does not export (it exports %v)", rulesFile, name, exported)
		}
	}
	if !slices.Contains(named, "outbox_destination_held") {
		t.Errorf("%s has no rule on outbox_destination_held", rulesFile)
	}
	if slices.Contains(exported, "outbox_destination_held") {
		t.Error("outbox_destination_held has a series while nothing is held")
	}
	m.ObserveHold("", outbox.ReasonUnreachable, true)
	m.ObserveHold("orders", outbox.ReasonTargetMissing, true)
	const held = `
# HELP outbox_destination_held 1 while deliveries to a target (empty: the whole destination) are held, not attempted, because of a fault of the destination named by reason (unreachable, credentials rejected, target missing).
# TYPE outbox_destination_held gauge
outbox_destination_held{reason="destination unreachable",target=""} 1
outbox_destination_held{reason="target missing",target="orders"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(held), "outbox_destination_held"); err != nil {
		t.Fatal(err)
	}
}

// Each outcome counts once in its per-type counter and once in the total the rules read.
func TestOutcomesTotalFollowsThePerTypeCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	a, b := outbox.Event{Type: "a"}, outbox.Event{Type: "b"}
	m.ObserveDelivery(a, outbox.Outcome{Result: outbox.Delivered}, 0)
	m.ObserveDelivery(b, outbox.Outcome{Result: outbox.Delivered}, 0)
	m.ObserveDelivery(a, outbox.Outcome{Result: outbox.Failed, NextAttemptAt: outboxtest.T0}, 0)
	m.ObserveDelivery(b, outbox.Outcome{Result: outbox.Failed}, 0) // no next attempt: given up
	m.ObserveUnavailable(a, errors.New("refused"))
	m.ObserveDelivery(a, outbox.Outcome{Result: outbox.Released}, 0)
	const want = `
# HELP outbox_outcomes_total Delivery outcomes of all types, by result: delivered, failed (will be retried), given_up, released (handed back uncounted), unavailable (the destination's fault). Every result is exported from the start.
# TYPE outbox_outcomes_total counter
outbox_outcomes_total{result="delivered"} 2
outbox_outcomes_total{result="failed"} 1
outbox_outcomes_total{result="given_up"} 1
outbox_outcomes_total{result="released"} 1
outbox_outcomes_total{result="unavailable"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outbox_outcomes_total"); err != nil {
		t.Fatal(err)
	}
}

// Every alert of the rules file has a promtool test in which it fires and one in which it
// stays quiet.
func TestEveryAlertRuleIsTestedBothWays(t *testing.T) {
	rules := readFile(t, rulesFile)
	tests := readFile(t, rulesTestFile)
	var alerts []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\w+)`).FindAllStringSubmatch(rules, -1) {
		alerts = append(alerts, m[1])
	}
	if len(alerts) < 10 {
		t.Fatalf("found %d alerts in %s, want one for each health rule and two more", len(alerts), rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, m := range regexp.MustCompile(`alertname: (\w+),?\s*exp_alerts:[ \t]*(\[\])?`).FindAllStringSubmatch(tests, -1) {
		if m[2] == "" {
			fires[m[1]] = true
		} else {
			quiet[m[1]] = true
		}
	}
	for _, a := range alerts {
		if !fires[a] {
			t.Errorf("%s: no test in which %s fires", rulesTestFile, a)
		}
		if !quiet[a] {
			t.Errorf("%s: no test in which %s stays quiet", rulesTestFile, a)
		}
	}
	for a := range fires {
		if !slices.Contains(alerts, a) {
			t.Errorf("%s tests %s, which %s does not have", rulesTestFile, a, rulesFile)
		}
	}
}

// promtool checks the rules and runs their tests. It is in Debian's prometheus package;
// .ci/run installs it.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install prometheus); the alert rules are not evaluated")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

func gatheredNames(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	return names
}

// metricsNamedByRules returns the outbox metric names in the rules file, expressions and
// annotations alike.
func metricsNamedByRules(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, n := range regexp.MustCompile(`\boutbox_[a-z_]+[a-z]`).FindAllString(readFile(t, rulesFile), -1) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) < 8 {
		t.Fatalf("found only %v in %s", names, rulesFile)
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
