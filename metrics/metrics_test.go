package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// The processor's outcomes land in the counters by type, and a refresh sets the
// gauges from the store.
func TestCountersAndGauges(t *testing.T) {
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(outboxtest.T0)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	events := []*outbox.Event{
		outbox.NewEvent("ok", "e1", "u"), outbox.NewEvent("ok", "e2", "u"),
		outbox.NewEvent("flaky", "e3", "u"), outbox.NewEvent("bad", "e4", "u"),
	}
	if err := store.Enqueue(context.Background(), outboxtest.T0, events...); err != nil {
		t.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, outbox.Handlers{
		"ok":    outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		"flaky": outbox.HandlerFunc(func(context.Context, outbox.Event) error { return errors.New("503") }),
		"bad":   outbox.HandlerFunc(func(context.Context, outbox.Event) error { return outbox.Permanent(errors.New("400")) }),
	}, outbox.Config{Clock: clock, Observers: []outbox.Observer{m}, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	late := outbox.NewEvent("ok", "e5", "u")
	if err := store.Enqueue(context.Background(), outboxtest.T0, late); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute) // the pending event, and the retry due since T0+1s, are stale
	if err := m.Refresh(context.Background(), store); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP outbox_events Events in the store by status (pending, processing, failed = retrying, given_up, completed), as of the last refresh.
# TYPE outbox_events gauge
outbox_events{status="completed"} 2
outbox_events{status="failed"} 1
outbox_events{status="given_up"} 1
outbox_events{status="pending"} 1
outbox_events{status="processing"} 0
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="ok"} 2
# HELP outbox_events_failed_total Failed delivery attempts that will be retried, by event type.
# TYPE outbox_events_failed_total counter
outbox_events_failed_total{type="flaky"} 1
# HELP outbox_events_given_up_total Failed delivery attempts that gave the event up (permanent error or no attempts left), by event type.
# TYPE outbox_events_given_up_total counter
outbox_events_given_up_total{type="bad"} 1
# HELP outbox_oldest_pending_age_seconds How long the oldest pending or retrying event has waited, as of the last refresh.
# TYPE outbox_oldest_pending_age_seconds gauge
outbox_oldest_pending_age_seconds 600
# HELP outbox_events_stale Events due for longer than the stale threshold, as of the last refresh.
# TYPE outbox_events_stale gauge
outbox_events_stale 2
`
	if err := testutil.GatherAndCompare(reg, stringsReader(want), "outbox_events", "outbox_events_delivered_total",
		"outbox_events_failed_total", "outbox_events_given_up_total", "outbox_oldest_pending_age_seconds", "outbox_events_stale"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "outbox_delivery_duration_seconds"); n != 3 {
		t.Fatalf("delivery duration series: %d, want one per type (3)", n)
	}
	if _, err := metrics.New(reg, metrics.Config{}); err == nil {
		t.Fatal("registering the metrics twice succeeded")
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// An outage shows in the metrics: unavailable attempts by type, the open circuit and
// how often it opened; a refresh sets the stuck and oldest-due gauges.
func TestOutageAndStuckMetrics(t *testing.T) {
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(outboxtest.T0)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var events []*outbox.Event
	for range 3 {
		events = append(events, outbox.NewEvent("sync", "e", "u"))
	}
	if err := store.Enqueue(context.Background(), outboxtest.T0, events...); err != nil {
		t.Fatal(err)
	}
	down := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return outbox.Unavailable(errors.New("refused")) })
	p, err := outbox.NewProcessor(store, down, outbox.Config{Clock: clock, Observers: []outbox.Observer{m}, Logger: outboxtest.Discard, MaxConcurrent: 1,
		Breaker: outbox.BreakerConfig{Threshold: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	// One more event; then a relay claims all four due ones and dies: stuck once its
	// lease is over, an hour on.
	stuck := outbox.NewEvent("sync", "stuck", "u")
	if err := store.Enqueue(context.Background(), outboxtest.T0, stuck); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Claim(context.Background(), outbox.ClaimParams{Owner: "dead", Now: outboxtest.T0,
		LeaseUntil: outboxtest.T0.Add(30 * time.Second), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := m.Refresh(context.Background(), store); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 1
# HELP outbox_circuit_opened_total Times the circuit breaker opened.
# TYPE outbox_circuit_opened_total counter
outbox_circuit_opened_total 1
# HELP outbox_deliveries_unavailable_total Delivery attempts that failed as the destination's fault (unreachable, credentials rejected, target missing; not counted against the event), by event type.
# TYPE outbox_deliveries_unavailable_total counter
outbox_deliveries_unavailable_total{type="sync"} 2
# HELP outbox_events_stuck Events processing under an expired lease (their processor is gone), as of the last refresh.
# TYPE outbox_events_stuck gauge
outbox_events_stuck 4
# HELP outbox_oldest_due_age_seconds How long the event due the longest has been due, as of the last refresh.
# TYPE outbox_oldest_due_age_seconds gauge
outbox_oldest_due_age_seconds 3570
`
	if err := testutil.GatherAndCompare(reg, stringsReader(want), "outbox_circuit_open", "outbox_circuit_opened_total",
		"outbox_deliveries_unavailable_total", "outbox_events_stuck", "outbox_oldest_due_age_seconds"); err != nil {
		t.Fatal(err)
	}
}
