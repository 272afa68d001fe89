package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// TestLogRelayTargetFaultHoldsOnlyItsType: a fault of one target (the topic of
// "invoice.sent" is missing) does not hold the log: the other types are delivered, the
// cursor passes the batch, and the held type's events, with the events of their keys
// behind them, move to the events table pending, their attempts not counted and the
// reason recorded. The type's later events go there unattempted while its hold lasts.
// The Processor holds the target there, and delivers them in key order once it is back.
func TestLogRelayTargetFaultHoldsOnlyItsType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	clock := outboxtest.NewClock(time.Now())
	var missing atomic.Bool
	missing.Store(true)
	var invoiceAttempts atomic.Int32
	rec := &receiver{fail: func(e outbox.Event) error {
		if e.Type != "invoice.sent" {
			return nil
		}
		invoiceAttempts.Add(1)
		if missing.Load() {
			return outbox.TargetFault(outbox.ReasonTargetMissing, "invoices", errors.New("unknown topic or partition"))
		}
		return nil
	}}
	invoices := map[string]bool{"x/1": true, "y/1": true, "z/1": true} // the rest are orders
	appendTyped := func(names ...string) []*outbox.Event {
		events := keyedEvents(names...)
		for _, e := range events {
			if invoices[e.EntityID] {
				e.Type = "invoice.sent"
			}
		}
		if err := env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, events...) }); err != nil {
			t.Fatal(err)
		}
		return events
	}
	r := env.relay(t, rec, sqlite.LogRelayConfig{MaxConcurrent: 1, Clock: clock,
		Breaker: outbox.BreakerConfig{Cooldown: time.Minute, MaxCooldown: time.Hour}})

	first := appendTyped("a/1", "x/1", "b/1", "y/1")
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Held || st.Read != 4 || st.Failed != 0 || st.Waiting != 2 || st.Delivered != 2 {
		t.Fatalf("step: %+v; want the invoices moved (waiting), the rest delivered, nothing held", st)
	}
	if got := rec.got(); !slices.Equal(got, []string{"a/1", "b/1"}) {
		t.Fatalf("delivered %v, want a/1, b/1", got)
	}
	for _, e := range []*outbox.Event{first[1], first[3]} {
		got, err := env.store.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != outbox.StatusPending || got.Attempts != 0 || len(got.Errors) != 0 ||
			got.LastError != "held, attempt not counted: target missing (invoices): unknown topic or partition" {
			t.Fatalf("%s in the table: status %s, attempts %d, errors %v, last error %q; want pending, no attempt, the reason",
				e.EntityID, got.Status, got.Attempts, got.Errors, got.LastError)
		}
	}

	// Within the hold, the type's new events go to the table unattempted (z/1), and a
	// key's later order follows its invoice there (x/2).
	before := invoiceAttempts.Load()
	appendTyped("z/1", "x/2", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Waiting != 2 || st.Delivered != 1 {
		t.Fatalf("step within the hold: %+v, %v", st, err)
	}
	if invoiceAttempts.Load() != before {
		t.Fatal("an invoice was attempted from the log within its target's hold")
	}

	// The topic is back: the Processor delivers the table's events, each key in order.
	missing.Store(false)
	p, err := outbox.NewProcessor(env.store, rec, outbox.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 4 { // x/1, y/1, z/1, x/2
		t.Fatalf("processor drained %d, %v; want the 4 moved events", n, err)
	}
	got := rec.got()
	if i, j := slices.Index(got, "x/1"), slices.Index(got, "x/2"); i < 0 || j < i {
		t.Fatalf("delivered %v: want x/1 before x/2", got)
	}
	if n := countTable(t, env.db); n != 4 {
		t.Fatalf("%d events in the table, want the 4 moved ones (completed)", n)
	}
}

// TestLogRelayPausedTypeWaitsInTheTable: events of a paused type are not delivered from
// the log: they move to the events table pending, with their key's later events behind
// them, and wait there (counted as the paused backlog) until the type is resumed; then
// the Processor delivers them, each key in order, and new events come from the log.
func TestLogRelayPausedTypeWaitsInTheTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	if err := env.store.PauseType(ctx, "invoice.sent", time.Now()); err != nil {
		t.Fatal(err)
	}
	rec := &receiver{}
	r := env.relay(t, rec, sqlite.LogRelayConfig{})
	events := keyedEvents("x/1", "x/2", "a/1", "y/1")
	events[0].Type, events[3].Type = "invoice.sent", "invoice.sent"
	if err := env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, events...) }); err != nil {
		t.Fatal(err)
	}
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Waiting != 3 {
		t.Fatalf("step: %+v, %v; want a/1 delivered, the invoices and x/2 behind x/1 moved", st, err)
	}
	p, err := outbox.NewProcessor(env.store, rec, outbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 0 {
		t.Fatalf("processor drained %d (%v) while the type is paused", n, err)
	}
	stats, err := env.store.Stats(ctx, outbox.StatsQuery{Now: time.Now()})
	if err != nil || stats.PausedWaiting() != 2 || stats.Pending != 3 {
		t.Fatalf("stats while paused: %+v (%v); want 3 pending, 2 of them the paused type's", stats, err)
	}
	if _, err := env.store.ResumeType(ctx, "invoice.sent"); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 3 {
		t.Fatalf("processor drained %d (%v) after the resume, want 3", n, err)
	}
	if got := rec.got(); !slices.Equal(got[:1], []string{"a/1"}) || slices.Index(got, "x/1") > slices.Index(got, "x/2") {
		t.Fatalf("delivered %v: want a/1 first, then x/1 before x/2", got)
	}
	env.appendNames(t, "x/3")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Waiting != 0 {
		t.Fatalf("step after the resume: %+v, %v; want x/3 delivered from the log", st, err)
	}
}

// TestLogRelayScopedToTypes: two relays, each on a cursor of its own and scoped to its
// types, share the log: each delivers its types and passes the others by, every event
// is delivered once, and Trim deletes what both have passed.
func TestLogRelayScopedToTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	orders, invoices := &receiver{}, &receiver{}
	ro := env.relay(t, orders, sqlite.LogRelayConfig{Cursor: "orders", Types: []string{"order.created"}})
	ri := env.relay(t, invoices, sqlite.LogRelayConfig{Cursor: "invoices", Types: []string{"invoice.sent"}})
	events := keyedEvents("a/1", "b/1", "a/2", "c/1", "b/2")
	events[1].Type, events[4].Type = "invoice.sent", "invoice.sent"
	if err := env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, events...) }); err != nil {
		t.Fatal(err)
	}
	if st, err := ro.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 3 {
		t.Fatalf("orders relay: %+v, %v; want 5 read, 3 delivered", st, err)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != 0 {
		t.Fatalf("trim before the invoices relay read: %d (%v), want 0", n, err)
	}
	if st, err := ri.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 2 {
		t.Fatalf("invoices relay: %+v, %v; want 5 read, 2 delivered", st, err)
	}
	if got := orders.got(); !slices.Equal(got, []string{"a/1", "a/2", "c/1"}) {
		t.Fatalf("orders relay delivered %v", got)
	}
	if got := invoices.got(); !slices.Equal(got, []string{"b/1", "b/2"}) {
		t.Fatalf("invoices relay delivered %v", got)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != 4 {
		t.Fatalf("trim after both: %d (%v), want 4 (all but the last position)", n, err)
	}
	if _, err := sqlite.NewLogRelay(ctx, env.log, env.store, orders, sqlite.LogRelayConfig{Types: []string{""}}); err == nil ||
		!strings.Contains(err.Error(), "sqlite.LogRelayConfig.Types[0]") {
		t.Fatalf("an empty type in scope: %v, want an error naming Types[0]", err)
	}
}

// TestLogRelayShadowRun: a shadow run on the log is the relay with outbox.Shadow as its
// handler: every event is compared, differences are recorded, nothing is delivered and
// nothing moves to the events table, and the cursor passes the batch.
func TestLogRelayShadowRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	shadow := outbox.NewShadow(func(_ context.Context, e outbox.Event) error {
		if e.EntityID == "b/1" {
			return errors.New("the existing path sent amount 12, this event 21")
		}
		return nil
	})
	r := env.relay(t, shadow, sqlite.LogRelayConfig{})
	env.appendNames(t, "a/1", "b/1", "b/2", "c/1")
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 4 || st.Failed+st.Waiting != 0 {
		t.Fatalf("shadow drain: %+v, %v; want all 4 handled, none moved", st, err)
	}
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events in the table after a shadow run", n)
	}
	seen, diffs := shadow.Seen(), shadow.Differences()
	if seen != 4 || len(diffs) != 1 || diffs[0].Event.EntityID != "b/1" {
		t.Fatalf("shadow saw %d, differences %v; want 4 and b/1's", seen, diffs)
	}
}
