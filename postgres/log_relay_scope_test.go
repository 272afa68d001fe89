package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// TestLogRelayTargetFaultHoldsOnlyItsType: a fault of one target (the topic of
// "invoice.sent" is missing) does not hold the log: the other types are delivered, the
// cursor passes the batch, and the held type's events move to the events table pending,
// their attempts not counted and the reason recorded, with the events of their keys
// behind them; the type's later events go there unattempted while its hold lasts. The
// Processor delivers them there in key order once the target is back.
func TestLogRelayTargetFaultHoldsOnlyItsType(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	clock := outboxtest.NewClock(time.Now())
	var missing atomic.Bool
	missing.Store(true)
	var invoiceAttempts atomic.Int32
	rec := &logReceiver{fail: func(e outbox.Event, attempt int) error {
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
	appendTyped := func(names ...string) []*outbox.Event { return appendTypedKeyed(t, env, invoices, names...) }
	r := env.relay(t, rec, postgres.LogRelayConfig{MaxConcurrent: 1, Clock: clock,
		Breaker: outbox.BreakerConfig{Cooldown: time.Minute, MaxCooldown: time.Hour}})

	first := appendTyped("a/1", "x/1", "b/1", "y/1")
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Held || st.Read != 4 || st.Failed != 0 || st.Waiting != 2 || st.Delivered != 2 {
		t.Fatalf("step: %+v; want the invoices moved (waiting), the rest delivered, nothing held", st)
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

	before := invoiceAttempts.Load()
	appendTyped("z/1", "x/2", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Waiting != 2 || st.Delivered != 1 {
		t.Fatalf("step within the hold: %+v, %v; want z/1 (held type) and x/2 (behind x/1) moved, c/1 delivered", st, err)
	}
	if invoiceAttempts.Load() != before {
		t.Fatal("an invoice was attempted from the log within its target's hold")
	}

	missing.Store(false)
	p, err := outbox.NewProcessor(env.store, rec, outbox.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 4 { // x/1, y/1, z/1, x/2
		t.Fatalf("processor drained %d, %v; want the 4 moved events", n, err)
	}
	got := rec.entities()
	if i, j := slices.Index(got, "x/1"), slices.Index(got, "x/2"); i < 0 || j < i {
		t.Fatalf("delivered %v: want x/1 before x/2", got)
	}
}

// appendTypedKeyed appends one transaction of events named "key/n", of type
// invoice.sent where invoices says so and order.created otherwise.
func appendTypedKeyed(t *testing.T, env logRelayEnv, invoices map[string]bool, names ...string) []*outbox.Event {
	t.Helper()
	events := make([]*outbox.Event, len(names))
	for i, name := range names {
		typ := "order.created"
		if invoices[name] {
			typ = "invoice.sent"
		}
		events[i] = outbox.NewEvent(typ, name, "user-1")
		events[i].OrderingKey = name[:1]
	}
	if err := pgx.BeginFunc(context.Background(), env.pool, func(tx pgx.Tx) error {
		return env.log.AppendTx(context.Background(), tx, events...)
	}); err != nil {
		t.Fatal(err)
	}
	return events
}

// TestLogRelayPausedTypeWaitsInTheTable: events of a paused type are not delivered from
// the log: they move to the events table pending, with their key's later events behind
// them, and wait there (counted as the paused backlog) until the type is resumed; then
// the Processor delivers them, each key in order.
func TestLogRelayPausedTypeWaitsInTheTable(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	if err := env.store.PauseType(ctx, "invoice.sent", time.Now()); err != nil {
		t.Fatal(err)
	}
	rec := &logReceiver{}
	r := env.relay(t, rec, postgres.LogRelayConfig{})
	appendTypedKeyed(t, env, map[string]bool{"x/1": true, "y/1": true}, "x/1", "x/2", "a/1", "y/1")
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
	got := rec.entities()
	if got[0] != "a/1" || slices.Index(got, "x/1") > slices.Index(got, "x/2") {
		t.Fatalf("delivered %v: want a/1 first, then x/1 before x/2", got)
	}
}

// TestLogRelayScopedToTypes: two relays, each on a cursor of its own and scoped to its
// types, share the log: each delivers its types and passes the others by, and every
// event is delivered once.
func TestLogRelayScopedToTypes(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	orders, invoices := &logReceiver{}, &logReceiver{}
	ro := env.relay(t, orders, postgres.LogRelayConfig{Cursor: "orders", Types: []string{"order.created"}})
	ri := env.relay(t, invoices, postgres.LogRelayConfig{Cursor: "invoices", Types: []string{"invoice.sent"}})
	appendTypedKeyed(t, env, map[string]bool{"b/1": true, "b/2": true}, "a/1", "b/1", "a/2", "c/1", "b/2")
	if st, err := ro.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 3 {
		t.Fatalf("orders relay: %+v, %v; want 5 read, 3 delivered", st, err)
	}
	if st, err := ri.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 2 {
		t.Fatalf("invoices relay: %+v, %v; want 5 read, 2 delivered", st, err)
	}
	if got := orders.entities(); !slices.Equal(got, []string{"a/1", "a/2", "c/1"}) {
		t.Fatalf("orders relay delivered %v", got)
	}
	if got := invoices.entities(); !slices.Equal(got, []string{"b/1", "b/2"}) {
		t.Fatalf("invoices relay delivered %v", got)
	}
	if _, err := postgres.NewLogRelay(ctx, env.log, env.store, orders, postgres.LogRelayConfig{Types: []string{""}}); err == nil ||
		!strings.Contains(err.Error(), "postgres.LogRelayConfig.Types[0]") {
		t.Fatalf("an empty type in scope: %v, want an error naming Types[0]", err)
	}
}
