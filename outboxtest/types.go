package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

func testClaimServesOnlyItsTypes(t *testing.T, h Harness) {
	mustEnqueue(t, h.Store, T0, event("a", "a1", "u"), event("b", "b1", "u"), event("c", "c1", "u"), event("a", "a2", "u"))
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay-a", Now: T0, LeaseUntil: T0.Add(time.Minute), Limit: 10, Types: []string{"a"}})
	if !slices.Equal(entityIDs(got), []string{"a1", "a2"}) {
		t.Fatalf("a processor scoped to type a claimed %v", entityIDs(got))
	}
	for _, e := range list(t, h.Store, outbox.Filter{Type: "b"}) {
		if e.Status != outbox.StatusPending || e.Attempts != 0 {
			t.Fatalf("an event of another type was touched: %+v", e)
		}
	}
	got = claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay-bc", Now: T0, LeaseUntil: T0.Add(time.Minute), Limit: 10, Types: []string{"c", "b"}})
	if !slices.Equal(entityIDs(got), []string{"b1", "c1"}) {
		t.Fatalf("a processor scoped to types b and c claimed %v", entityIDs(got))
	}
}

// pauser returns the store's TypePauser, or skips: pausing is optional for a store.
func pauser(t *testing.T, h Harness) outbox.TypePauser {
	p, ok := h.Store.(outbox.TypePauser)
	if !ok {
		t.Skipf("%T does not implement outbox.TypePauser", h.Store)
	}
	return p
}

func testPausedTypeWaits(t *testing.T, h Harness) {
	ps := pauser(t, h)
	ctx := context.Background()
	mustEnqueue(t, h.Store, T0, event("a", "a1", "u"), event("b", "b1", "u"))
	if err := ps.PauseType(ctx, "a", T0); err != nil {
		t.Fatal(err)
	}
	if err := ps.PauseType(ctx, "a", T0.Add(time.Hour)); err != nil { // again: keeps the first time
		t.Fatal(err)
	}
	paused, err := ps.PausedTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(paused) != 1 || paused[0].Type != "a" || !paused[0].Since.Equal(T0) {
		t.Fatalf("PausedTypes = %+v, want a since %s", paused, T0)
	}

	hourOn := T0.Add(time.Hour)
	got := claim(t, h.Store, "relay", hourOn, 10)
	if !slices.Equal(entityIDs(got), []string{"b1"}) {
		t.Fatalf("claimed %v with type a paused, want only b1", entityIDs(got))
	}
	got = claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay-a", Now: hourOn, LeaseUntil: hourOn.Add(time.Minute), Limit: 10, Types: []string{"a"}})
	if len(got) != 0 {
		t.Fatalf("a processor scoped to the paused type claimed %v", entityIDs(got))
	}
	st := stats(t, h.Store, outbox.StatsQuery{Now: hourOn, StaleAfter: 5 * time.Minute})
	if !slices.Equal(st.Paused, []string{"a"}) || st.PausedWaiting() != 1 || st.Stale != 0 || st.OldestPendingAge != 0 {
		t.Fatalf("stats with a paused: paused %v, waiting %d, stale %d, oldest waiting %s; want [a], 1, 0, 0",
			st.Paused, st.PausedWaiting(), st.Stale, st.OldestPendingAge)
	}
	if hs := outbox.CheckHealth(st, outbox.HealthRules{MaxPending: -1}); !hs.Healthy {
		t.Fatalf("a paused backlog an hour old alerts: %+v", hs.Alerts)
	}

	resumed, err := ps.ResumeType(ctx, "a")
	if err != nil || !resumed {
		t.Fatalf("ResumeType(a) = %v, %v; want true", resumed, err)
	}
	if again, err := ps.ResumeType(ctx, "a"); err != nil || again {
		t.Fatalf("ResumeType of a type not paused = %v, %v; want false", again, err)
	}
	if got := claim(t, h.Store, "relay", hourOn, 10); !slices.Equal(entityIDs(got), []string{"a1"}) {
		t.Fatalf("after resume claimed %v, want a1", entityIDs(got))
	}
	if err := ps.PauseType(ctx, "", T0); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("PauseType(\"\") = %v, want ErrInvalid", err)
	}
}

// A processor that serves one type leaves the others pending, untouched and not
// failed, however long they wait.
func testProcessorScopedToTypes(t *testing.T, h Harness) {
	clock := NewClock(T0)
	var (
		mu        sync.Mutex
		delivered []string
	)
	handler := outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		delivered = append(delivered, e.EntityID)
		return nil
	})
	p := newProcessor(t, h.Store, outbox.Handlers{"a": handler}, outbox.Config{Clock: clock, Types: []string{"a"}})
	mustEnqueue(t, h.Store, T0, event("a", "a1", "u"), event("b", "b1", "u"), event("a", "a2", "u"))
	for range 3 {
		processBatch(t, p)
		clock.Advance(20 * time.Minute)
	}
	slices.Sort(delivered) // delivered concurrently
	if !slices.Equal(delivered, []string{"a1", "a2"}) {
		t.Fatalf("delivered %v, want a1 a2", delivered)
	}
	b := list(t, h.Store, outbox.Filter{Type: "b"})
	if len(b) != 1 || b[0].Status != outbox.StatusPending || b[0].Attempts != 0 || b[0].LastError != "" {
		t.Fatalf("the other type's event an hour on: %+v, want pending and untouched", b)
	}
}

// Two processors with disjoint types share one store: each delivers its own type, both
// at once, and neither touches the other's events.
func testScopedProcessorsDrainDisjointTypes(t *testing.T, h Harness) {
	var events []*outbox.Event
	for i := range 40 {
		events = append(events, event([]string{"a", "b"}[i%2], fmt.Sprintf("e%d", i), "u"))
	}
	mustEnqueue(t, h.Store, T0, events...)
	var (
		mu  sync.Mutex
		got = map[string][]string{} // processor → types it delivered
	)
	handler := func(name string) outbox.Handler {
		return outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
			mu.Lock()
			defer mu.Unlock()
			got[name] = append(got[name], e.Type)
			return nil
		})
	}
	clock := NewClock(T0)
	pa := newProcessor(t, h.Store, handler("a"), outbox.Config{Clock: clock, Types: []string{"a"}, BatchSize: 5, Owner: "pa"})
	pb := newProcessor(t, h.Store, handler("b"), outbox.Config{Clock: clock, Types: []string{"b"}, BatchSize: 5, Owner: "pb"})
	// Each drains until its own type is done. A claim may come back empty while the
	// other processor's claim holds the rows it read (MySQL locks what a locking read
	// scans, other types' rows included, and SKIP LOCKED passes over them): Drain then
	// stops early, and the next cycle claims them, as a running processor's would.
	var wg sync.WaitGroup
	for _, p := range []*outbox.Processor{pa, pb} {
		wg.Go(func() {
			typ := p.Config().Types[0]
			for range 100 {
				if _, err := p.Drain(context.Background()); err != nil {
					t.Errorf("Drain: %v", err)
					return
				}
				if pending := list(t, h.Store, outbox.Filter{Type: typ, Status: outbox.StatusPending}); len(pending) == 0 {
					return
				}
			}
			t.Errorf("processor %s: events of its type still pending after 100 drains", typ)
		})
	}
	wg.Wait()
	for name, types := range got {
		if len(types) != 20 || slices.ContainsFunc(types, func(typ string) bool { return typ != name }) {
			t.Errorf("processor %s delivered %d events of types %v; want 20 of its own type", name, len(types), types)
		}
	}
	if st := stats(t, h.Store, outbox.StatsQuery{Now: T0}); st.Completed != 40 {
		t.Fatalf("completed %d of 40", st.Completed)
	}
}

// unchanged fails when an event held back from a claim was touched by it.
func unchanged(t *testing.T, before, after outbox.Event) {
	t.Helper()
	if after.Status != before.Status || after.Attempts != before.Attempts || after.LeaseOwner != before.LeaseOwner ||
		!after.LeaseExpiresAt.Equal(before.LeaseExpiresAt) || !after.NextAttemptAt.Equal(before.NextAttemptAt) ||
		after.LastError != before.LastError || len(after.Errors) != len(before.Errors) || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("event %s was touched by a claim that skips its type:\nbefore %+v\nafter  %+v", before.EntityID, before, after)
	}
}

// A claim leaves the events of SkipTypes as they are: a pending one and one under an
// expired lease alike are neither claimed, nor leased, nor failed. A later claim
// without SkipTypes serves them.
func testClaimSkipsSkipTypes(t *testing.T, h Harness) {
	mustEnqueue(t, h.Store, T0, event("b", "b-leased", "u"))
	claim(t, h.Store, "dead", T0, 1) // its lease expires at T0+30s, with attempts left
	mustEnqueue(t, h.Store, T0, event("a", "a1", "u"), event("b", "b1", "u"), event("a", "a2", "u"))
	before := list(t, h.Store, outbox.Filter{Type: "b"})

	at := T0.Add(time.Minute)
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay", Now: at, LeaseUntil: at.Add(time.Minute), Limit: 10, SkipTypes: []string{"b"}})
	if !slices.Equal(entityIDs(got), []string{"a1", "a2"}) {
		t.Fatalf("a claim skipping type b claimed %v, want a1 a2", entityIDs(got))
	}
	after := list(t, h.Store, outbox.Filter{Type: "b"})
	if len(after) != len(before) {
		t.Fatalf("%d events of type b before the claim, %d after", len(before), len(after))
	}
	for i := range before {
		unchanged(t, before[i], after[i])
	}

	got = claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay", Now: at, LeaseUntil: at.Add(time.Minute), Limit: 10})
	if !slices.Equal(entityIDs(got), []string{"b-leased", "b1"}) {
		t.Fatalf("a claim without SkipTypes claimed %v, want b-leased b1", entityIDs(got))
	}
}

// The claim's give-up of an expired lease with no attempts left is scoped as the claim
// is: a claim for other types, one that skips the event's type, or (on a store that
// pauses types) any claim while its type is paused leaves it alone; only a claim that
// would serve it gives it up.
func testScopedClaimGivesUpOnlyItsTypes(t *testing.T, h Harness) {
	ctx := context.Background()
	y := event("y", "y1", "u")
	y.MaxAttempts = 1
	mustEnqueue(t, h.Store, T0, y)
	claim(t, h.Store, "dead", T0, 1) // y's only attempt, under a lease that expires at T0+30s
	mustEnqueue(t, h.Store, T0, event("x", "x1", "u"))
	before := get(t, h.Store, y.ID)

	at := T0.Add(time.Minute)
	params := func(p outbox.ClaimParams) outbox.ClaimParams {
		p.Owner, p.Now, p.LeaseUntil, p.Limit = "relay", at, at.Add(time.Minute), 10
		return p
	}
	if got := claimWith(t, h.Store, params(outbox.ClaimParams{Types: []string{"x"}})); !slices.Equal(entityIDs(got), []string{"x1"}) {
		t.Fatalf("a claim scoped to type x claimed %v, want x1", entityIDs(got))
	}
	unchanged(t, before, get(t, h.Store, y.ID))
	if got := claimWith(t, h.Store, params(outbox.ClaimParams{SkipTypes: []string{"y"}})); len(got) != 0 {
		t.Fatalf("a claim skipping type y claimed %v, want none", entityIDs(got))
	}
	unchanged(t, before, get(t, h.Store, y.ID))
	if ps, ok := h.Store.(outbox.TypePauser); ok {
		if err := ps.PauseType(ctx, "y", at); err != nil {
			t.Fatal(err)
		}
		if got := claimWith(t, h.Store, params(outbox.ClaimParams{})); len(got) != 0 {
			t.Fatalf("a claim with type y paused claimed %v, want none", entityIDs(got))
		}
		unchanged(t, before, get(t, h.Store, y.ID))
		if _, err := ps.ResumeType(ctx, "y"); err != nil {
			t.Fatal(err)
		}
	}

	if got := claimWith(t, h.Store, params(outbox.ClaimParams{})); len(got) != 0 {
		t.Fatalf("claimed %v; want none: y used its only attempt", entityIDs(got))
	}
	if e := get(t, h.Store, y.ID); !e.GivenUp() || e.LastError == "" {
		t.Fatalf("after an unscoped claim y is %q (next %v, error %q); want given up with the lease error", e.Status, e.NextAttemptAt, e.LastError)
	}
}
