package outboxtest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/google/uuid"
)

func alertRules(h outbox.Health) []string {
	var rules []string
	for _, a := range h.Alerts {
		rules = append(rules, a.Rule)
	}
	return rules
}

// An event claimed under a 30 s lease whose processor died is, an hour on, neither
// pending nor stale: it is stuck, counted, listed, and alerted on.
func testStuck(t *testing.T, h Harness) {
	stuck, waiting := event("t", "stuck", "u"), event("t", "waiting", "u")
	mustEnqueue(t, h.Store, T0, stuck)
	claimed := claim(t, h.Store, "dead-relay", T0, 1) // leased until T0+30s; the relay never reports back
	if len(claimed) != 1 {
		t.Fatalf("claimed %d", len(claimed))
	}
	mustEnqueue(t, h.Store, T0.Add(59*time.Minute), waiting)
	now := T0.Add(time.Hour)

	q := outbox.HealthRules{}.StatsQuery("", now, 5*time.Minute)
	st := stats(t, h.Store, q)
	if st.Stuck != 1 || st.Processing != 1 || st.Stale != 0 {
		t.Fatalf("stuck %d processing %d stale %d; want 1 stuck (processing, not stale)", st.Stuck, st.Processing, st.Stale)
	}
	if want := time.Hour - 30*time.Second; st.OldestDueAge != want {
		t.Fatalf("OldestDueAge = %s, want %s (since the lease expired)", st.OldestDueAge, want)
	}
	if other := stats(t, h.Store, outbox.StatsQuery{UserID: "other", Now: now}); other.Stuck != 0 {
		t.Fatalf("another user's stats count %d stuck", other.Stuck)
	}
	if got := entityIDs(list(t, h.Store, outbox.Filter{StuckAt: now})); !slices.Equal(got, []string{"stuck"}) {
		t.Fatalf("List(StuckAt now) = %v, want [stuck]", got)
	}
	if got := list(t, h.Store, outbox.Filter{StuckAt: T0.Add(10 * time.Second)}); len(got) != 0 {
		t.Fatalf("List(StuckAt before the expiry) = %v, want none: the lease was still live", entityIDs(got))
	}
	if got := list(t, h.Store, outbox.Filter{DueBefore: now.Add(-5 * time.Minute)}); len(got) != 0 {
		t.Fatalf("the stuck event is listed as stale: %v", entityIDs(got))
	}
	hl := outbox.CheckHealth(st, outbox.HealthRules{})
	if rules := alertRules(hl); hl.Healthy || !slices.Equal(rules, []string{outbox.RuleStuck, outbox.RuleOldestDue}) {
		t.Fatalf("alerts %v, want stuck and oldest_due", rules)
	}
	// A processor that runs takes the stuck event over (it counts as a failed attempt).
	again := claim(t, h.Store, "live-relay", now, 10)
	if len(again) != 2 {
		t.Fatalf("a live relay claimed %d events, want the stuck one and the waiting one", len(again))
	}
	if st := stats(t, h.Store, q); st.Stuck != 0 {
		t.Fatalf("after a live relay claimed them, %d still stuck", st.Stuck)
	}
}

// settleAll claims every due event at at and settles each with the outcome of result.
func settleAll(t *testing.T, s outbox.Store, at time.Time, n int, o func(e outbox.Event) outbox.Outcome) {
	t.Helper()
	for done := 0; done < n; {
		evs := claim(t, s, "o", at, 500)
		if len(evs) == 0 {
			t.Fatalf("claimed nothing after %d of %d", done, n)
		}
		outs := make([]outbox.Outcome, len(evs))
		for i, e := range evs {
			outs[i] = o(e)
			outs[i].ID = e.ID
		}
		settle(t, s, "o", at, outs...)
		done += len(evs)
	}
}

func enqueueN(t *testing.T, s outbox.Store, at time.Time, typ string, n int) {
	t.Helper()
	evs := make([]*outbox.Event, n)
	for i := range evs {
		evs[i] = event(typ, uuid.NewString(), "u")
	}
	mustEnqueue(t, s, at, evs...)
}

// The failure rate is over the window's outcomes: a cleanup of old completions alone
// never raises it.
func testRecentWindowIgnoresCleanup(t *testing.T, h Harness) {
	enqueueN(t, h.Store, T0, "good", 99)
	enqueueN(t, h.Store, T0, "bad", 1)
	settleAll(t, h.Store, T0, 100, func(e outbox.Event) outbox.Outcome {
		if e.Type == "bad" {
			return outbox.Outcome{Result: outbox.Failed, Error: "rejected"} // given up
		}
		return outbox.Outcome{Result: outbox.Delivered}
	})
	rules := outbox.HealthRules{MaxGivenUp: -1} // this test is about the rate alone
	q := rules.StatsQuery("", T0.Add(time.Minute), 5*time.Minute)
	st := stats(t, h.Store, q)
	want := outbox.WindowCounts{Window: outbox.DefaultHealthWindow, Completed: 99, GivenUp: 1}
	if st.Recent != want {
		t.Fatalf("Recent = %+v, want %+v", st.Recent, want)
	}
	if hl := outbox.CheckHealth(st, rules); !hl.Healthy {
		t.Fatalf("1%% failure rate alerts: %v", alertRules(hl))
	}

	later := T0.Add(2 * time.Hour)
	if n, err := h.Store.DeleteCompleted(context.Background(), later.Add(-time.Hour), 1000); err != nil || n != 99 {
		t.Fatalf("DeleteCompleted = %d, %v; want 99", n, err)
	}
	st = stats(t, h.Store, rules.StatsQuery("", later, 5*time.Minute))
	if st.GivenUp != 1 || st.Recent != (outbox.WindowCounts{Window: outbox.DefaultHealthWindow}) {
		t.Fatalf("after cleanup: given up %d, Recent %+v; want the given-up one kept but out of the window", st.GivenUp, st.Recent)
	}
	if hl := outbox.CheckHealth(st, rules); !hl.Healthy {
		t.Fatalf("cleanup raised alerts: %v", alertRules(hl))
	}
}

// 1,000 old completions do not hide 20 recent give-ups, and any give-up alerts.
func testRecentWindowSeesAnOutage(t *testing.T, h Harness) {
	enqueueN(t, h.Store, T0, "old", 1000)
	settleAll(t, h.Store, T0, 1000, func(outbox.Event) outbox.Outcome { return outbox.Outcome{Result: outbox.Delivered} })
	outage := T0.Add(time.Hour)
	enqueueN(t, h.Store, outage, "new", 20)
	settleAll(t, h.Store, outage, 20, func(outbox.Event) outbox.Outcome {
		return outbox.Outcome{Result: outbox.Failed, Error: "connection refused"}
	})
	st := stats(t, h.Store, outbox.HealthRules{}.StatsQuery("", outage.Add(time.Minute), 5*time.Minute))
	if st.Completed != 1000 || st.Recent.Completed != 0 || st.Recent.GivenUp != 20 {
		t.Fatalf("completed %d, Recent %+v; want 1000 kept, none recent, 20 given up recently", st.Completed, st.Recent)
	}
	hl := outbox.CheckHealth(st, outbox.HealthRules{})
	if rules := alertRules(hl); !slices.Equal(rules, []string{outbox.RuleFailureRate, outbox.RuleGivenUp}) {
		t.Fatalf("alerts %v, want failure_rate and given_up", rules)
	}
	// Another user's window holds only that user's outcomes.
	if u := stats(t, h.Store, outbox.StatsQuery{UserID: "nobody", Now: outage, Window: time.Hour}); u.Recent.GivenUp != 0 {
		t.Fatalf("another user's window counts %d given up", u.Recent.GivenUp)
	}
}

// Blocked events (behind a given-up head of their key) can be listed.
func testListBlocked(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for _, name := range []string{"head", "behind-1", "behind-2"} {
		e := event("t", name, "u")
		e.OrderingKey = "k"
		evs = append(evs, e)
	}
	free := event("t", "free", "u")
	free.OrderingKey = "other"
	evs = append(evs, free, event("t", "unkeyed", "u"))
	mustEnqueue(t, h.Store, T0, evs...)
	got := claim(t, h.Store, "o", T0, 10)
	for _, e := range got {
		if e.EntityID == "head" {
			settle(t, h.Store, "o", T0, outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "poison"})
		} else {
			settle(t, h.Store, "o", T0, outbox.Outcome{ID: e.ID, Result: outbox.Released})
		}
	}
	if b := entityIDs(list(t, h.Store, outbox.Filter{Blocked: true})); !slices.Equal(b, []string{"behind-1", "behind-2"}) {
		t.Fatalf("List(Blocked) = %v, want behind-1 and behind-2", b)
	}
	if st := stats(t, h.Store, outbox.StatsQuery{Now: T0}); st.Blocked != 2 {
		t.Fatalf("Stats.Blocked = %d, want 2 (as listed)", st.Blocked)
	}
}

// The history numbers attempts over the event's life: an operator's retry gives a fresh
// budget, but the next failure is attempt 2, not attempt 1 again.
func testAttemptNumbersContinue(t *testing.T, h Harness) {
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "o", T0, 1)
	settle(t, h.Store, "o", T0, outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "first"})
	if n, err := h.Store.Retry(context.Background(), T0.Add(time.Minute), outbox.Filter{IDs: []string{e.ID}}); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	claim(t, h.Store, "o", T0.Add(time.Minute), 1)
	settle(t, h.Store, "o", T0.Add(time.Minute), outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "second"})
	got := get(t, h.Store, e.ID)
	var nums []int
	for _, ae := range got.Errors {
		nums = append(nums, ae.Attempt)
	}
	if !slices.Equal(nums, []int{1, 2}) || got.Attempts != 1 {
		t.Fatalf("history attempts %v, budget attempts %d; want [1 2] and 1 in the fresh budget", nums, got.Attempts)
	}
}

// A duplicate event ID is refused with an error naming ID, and nothing of the batch is written.
func testDuplicateIDNamesID(t *testing.T, h Harness) {
	first := event("t", "first", "u")
	mustEnqueue(t, h.Store, T0, first)
	dup := event("t", "dup", "u")
	dup.ID = first.ID
	err := h.Store.Enqueue(context.Background(), T0, event("t", "fine", "u"), dup)
	var fe *outbox.FieldError
	if !errors.As(err, &fe) || fe.Field != "ID" || !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("duplicate ID: %v, want a FieldError naming ID", err)
	}
	if all := list(t, h.Store, outbox.Filter{}); len(all) != 1 {
		t.Fatalf("%d events after the refused batch, want 1", len(all))
	}
}

// Text that one store cannot hold is refused by every store, naming the field.
func testNULRefused(t *testing.T, h Harness) {
	err := h.Store.Enqueue(context.Background(), T0, event("t", "entity\x00id", "u"))
	var fe *outbox.FieldError
	if !errors.As(err, &fe) || fe.Field != "EntityID" {
		t.Fatalf("entity ID with a NUL byte: %v, want a FieldError naming EntityID", err)
	}
	if all := list(t, h.Store, outbox.Filter{}); len(all) != 0 {
		t.Fatalf("%d events written", len(all))
	}
}

// A processor's Health alerts on an event stuck under an expired lease, one hour on.
func testProcessorHealthStuck(t *testing.T, h Harness) {
	clock := NewClock(T0)
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "dead-relay", T0, 1)
	p := newProcessor(t, h.Store, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }), outbox.Config{Clock: clock})
	clock.Advance(time.Hour)
	hl, err := p.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rules := alertRules(hl); !slices.Contains(rules, outbox.RuleStuck) || hl.Healthy {
		t.Fatalf("alerts %v, want stuck", rules)
	}
	stuck, err := p.StuckEvents(context.Background(), 0)
	if err != nil || len(stuck) != 1 || stuck[0].ID != e.ID {
		t.Fatalf("StuckEvents = %v, %v; want the one event", entityIDs(stuck), err)
	}
	stale, err := p.StaleEvents(context.Background(), 0)
	if err != nil || len(stale) != 0 {
		t.Fatalf("StaleEvents = %v, %v; a stuck event is not stale", entityIDs(stale), err)
	}
}
