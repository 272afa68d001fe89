package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// The relays are metrics.LogSources.
var _ metrics.LogSource = (*sqlite.LogRelay)(nil)

// TestLogRelayReportsToMetrics: a relay given the metrics package's observer counts
// what it reads, delivers and fails, and the hold of the whole destination while it
// refuses, as a Processor's metrics do.
func TestLogRelayReportsToMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	rec := &receiver{fail: func(e outbox.Event) error {
		if e.EntityID == "b/1" {
			return errors.New("500 internal server error")
		}
		return nil
	}}
	r := env.relay(t, rec, sqlite.LogRelayConfig{MaxConcurrent: 1, Observers: []outbox.Observer{m}})

	env.appendNames(t, "a/1", "b/1", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Failed != 1 {
		t.Fatalf("first step: %+v, %v", st, err)
	}
	rec.setFail(func(outbox.Event) error { return outbox.Unavailable(errors.New("connection refused")) })
	env.appendNames(t, "d/1")
	if st, err := r.Step(ctx); err != nil || !st.Held {
		t.Fatalf("second step: %+v, %v", st, err)
	}
	outboxtest.CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 1
# HELP outbox_claimed_events_total Events claimed for delivery.
# TYPE outbox_claimed_events_total counter
outbox_claimed_events_total 4
# HELP outbox_deliveries_unavailable_total Delivery attempts that failed as the destination's fault (unreachable, credentials rejected, target missing; not counted against the event), by event type.
# TYPE outbox_deliveries_unavailable_total counter
outbox_deliveries_unavailable_total{type="order.created"} 1
# HELP outbox_destination_held 1 while deliveries to a target (empty: the whole destination) are held, not attempted, because of a fault of the destination named by reason (unreachable, credentials rejected, target missing).
# TYPE outbox_destination_held gauge
outbox_destination_held{reason="destination unreachable",target=""} 1
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 2
# HELP outbox_events_failed_total Failed delivery attempts that will be retried, by event type.
# TYPE outbox_events_failed_total counter
outbox_events_failed_total{type="order.created"} 1
`)

	rec.setFail(nil)
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Held {
		t.Fatalf("step after recovery: %+v, %v", st, err)
	}
	outboxtest.CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 0
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 3
`)
	if n, err := testutil.GatherAndCount(reg, "outbox_destination_held"); err != nil || n != 0 {
		t.Fatalf("%d outbox_destination_held series after the destination answered (%v), want none", n, err)
	}
}

// TestLogRelayWaitingCountsWhatTheCursorHasNotPassed: Waiting counts the events past the
// relay's cursor, with the oldest one's creation time, as the cursor moves.
func TestLogRelayWaitingCountsWhatTheCursorHasNotPassed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	r := env.relay(t, &receiver{}, sqlite.LogRelayConfig{BatchSize: 2})
	check := func(step string, want int64, oldestWant time.Time) {
		t.Helper()
		n, oldest, err := r.Waiting(ctx)
		if err != nil || n != want || !oldest.Equal(oldestWant.Truncate(time.Microsecond)) {
			t.Fatalf("%s: %d waiting, oldest %v (%v); want %d, oldest %v", step, n, oldest, err, want, oldestWant)
		}
	}
	check("an empty log", 0, time.Time{})
	events := env.appendNames(t, "a/1", "b/1", "c/1")
	check("three appended", 3, events[0].CreatedAt)
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 {
		t.Fatalf("step: %+v, %v", st, err)
	}
	check("two delivered", 1, events[2].CreatedAt)
	if n, _, err := env.log.Waiting(ctx, sqlite.DefaultLogRelayCursor); err != nil || n != 1 {
		t.Fatalf("Log.Waiting of the relay's cursor: %d (%v), want 1", n, err)
	}
	if n, _, err := env.log.Waiting(ctx, "nobody"); err != nil || n != 0 {
		t.Fatalf("Log.Waiting of a name with no cursor: %d (%v), want 0", n, err)
	}
	if _, err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	check("all delivered", 0, time.Time{})
}

// TestLogRelayRunTrimsTheLog: a running relay deletes what every cursor has passed by
// itself, every RetainInterval, keeping the row at the lowest position (the log's
// largest rowid is never deleted, so no rowid is reused).
func TestLogRelayRunTrimsTheLog(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	names := make([]string, 300)
	for i := range names {
		names[i] = fmt.Sprintf("k%d/1", i%7)
	}
	events := env.appendNames(t, names...)
	rec := &receiver{}
	r := env.relay(t, rec, sqlite.LogRelayConfig{BatchSize: 50, RetainInterval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		var rows int
		var low int64
		if err := env.db.QueryRow(`SELECT count(*), coalesce(min(seq), 0) FROM outbox_log`).Scan(&rows, &low); err != nil {
			t.Fatal(err)
		}
		if len(rec.got()) >= len(events) && rows == 1 {
			if last := events[len(events)-1].Seq; low != last {
				t.Fatalf("the row kept is %d, want the last event's %d", low, last)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute of Run: %d of %d delivered, %d rows in the log, want 1", len(rec.got()), len(events), rows)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLogDropCursorLetsTrimGoOn: a cursor no one reads holds every event from its
// position; dropping it lets Trim delete what the others passed. A cursor under a
// relay's lease is refused, and a name with no cursor is told apart.
func TestLogDropCursorLetsTrimGoOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	if _, err := env.log.Cursor(ctx, "abandoned"); err != nil {
		t.Fatal(err)
	}
	events := env.appendNames(t, "a/1", "a/2", "b/1", "c/1")
	r := env.relay(t, &receiver{}, sqlite.LogRelayConfig{})
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 4 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != 0 {
		t.Fatalf("trim behind the abandoned cursor deleted %d (%v), want 0", n, err)
	}
	if err := env.log.DropCursor(ctx, "nobody"); !errors.Is(err, sqlite.ErrLogCursorNotFound) {
		t.Fatalf("drop of no cursor: %v, want ErrLogCursorNotFound", err)
	}
	if err := env.log.DropCursor(ctx, sqlite.DefaultLogRelayCursor); !errors.Is(err, sqlite.ErrLogCursorBusy) {
		t.Fatalf("drop of the relay's leased cursor: %v, want ErrLogCursorBusy", err)
	}
	if err := env.log.DropCursor(ctx, "abandoned"); err != nil {
		t.Fatal(err)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != len(events)-1 {
		t.Fatalf("trim after the drop deleted %d (%v), want %d (all but the relay's position)", n, err, len(events)-1)
	}
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.log.DropCursor(ctx, sqlite.DefaultLogRelayCursor); err != nil {
		t.Fatalf("drop of a released cursor: %v", err)
	}
}
