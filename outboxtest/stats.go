package outboxtest

import (
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/google/uuid"
)

func testStats(t *testing.T, h Harness) {
	at := T0.Add(time.Minute)
	mk := func(typ, user string) *outbox.Event { return event(typ, uuid.NewString(), user) }
	evs := []*outbox.Event{
		mk("a", "alice"), mk("a", "alice"), mk("b", "alice"), // to complete
		mk("a", "alice"),                 // to fail and retry
		mk("b", "bob"),                   // to give up
		mk("b", "bob"),                   // to keep processing
		mk("a", "bob"), mk("b", "alice"), // pending
	}
	mustEnqueue(t, h.Store, T0, evs[:6]...)
	claim(t, h.Store, "o", T0, 10)
	settle(t, h.Store, "o", at,
		outbox.Outcome{ID: evs[0].ID, Result: outbox.Delivered},
		outbox.Outcome{ID: evs[1].ID, Result: outbox.Delivered},
		outbox.Outcome{ID: evs[2].ID, Result: outbox.Delivered},
		outbox.Outcome{ID: evs[3].ID, Result: outbox.Failed, Error: "x", NextAttemptAt: at.Add(time.Hour)},
		outbox.Outcome{ID: evs[4].ID, Result: outbox.Failed, Error: "x"},
	)
	mustEnqueue(t, h.Store, T0.Add(30*time.Second), evs[6:]...)

	st := stats(t, h.Store, outbox.StatsQuery{Now: at, StaleAfter: time.Hour})
	want := outbox.Stats{Total: 8, Pending: 2, Processing: 1, Completed: 3, Failed: 1, GivenUp: 1,
		OldestPendingAge: time.Minute,      // evs[3], created at T0, still waiting
		Stuck:            1,                // evs[5], leased until T0+30s and never settled
		OldestDueAge:     30 * time.Second, // evs[5] and the pending ones: due since T0+30s
		ByType: map[string]outbox.TypeCounts{
			"a": {Pending: 1, Completed: 2, Failed: 1},
			"b": {Pending: 1, Processing: 1, Completed: 1, GivenUp: 1},
		}}
	if d := diffJSON(want, st); d != "" {
		t.Fatalf("overall stats: %s", d)
	}
	if r := st.SuccessRate(); r != 3.0/5.0 {
		t.Fatalf("success rate %v, want 0.6 (3 completed of 5 settled)", r)
	}
	alice := stats(t, h.Store, outbox.StatsQuery{UserID: "alice", Now: at, StaleAfter: time.Hour})
	wantAlice := outbox.Stats{Total: 5, Pending: 1, Completed: 3, Failed: 1, OldestPendingAge: time.Minute, OldestDueAge: 30 * time.Second,
		ByType: map[string]outbox.TypeCounts{"a": {Completed: 2, Failed: 1}, "b": {Pending: 1, Completed: 1}}}
	if d := diffJSON(wantAlice, alice); d != "" {
		t.Fatalf("alice's stats: %s", d)
	}
	if empty := stats(t, h.Store, outbox.StatsQuery{UserID: "nobody", Now: at}); empty.Total != 0 || empty.SuccessRate() != 1 {
		t.Fatalf("stats of a user with no events: %+v", empty)
	}
}

func testStale(t *testing.T, h Harness) {
	old, fresh, retrying, later := event("t", "old", "u"), event("t", "fresh", "u"), event("t", "retrying", "u"), event("t", "later", "u")
	mustEnqueue(t, h.Store, T0, old, retrying, later)
	claimed := claim(t, h.Store, "o", T0, 10)
	if len(claimed) != 3 {
		t.Fatalf("claimed %d", len(claimed))
	}
	settle(t, h.Store, "o", T0,
		outbox.Outcome{ID: old.ID, Result: outbox.Released},
		outbox.Outcome{ID: retrying.ID, Result: outbox.Failed, Error: "x", NextAttemptAt: T0.Add(time.Minute)},
		outbox.Outcome{ID: later.ID, Result: outbox.Failed, Error: "x", NextAttemptAt: T0.Add(time.Hour)},
	)
	mustEnqueue(t, h.Store, T0.Add(9*time.Minute), fresh)

	now := T0.Add(10 * time.Minute) // stale after 5m: old (due since T0) and retrying (due since T0+1m)
	staleBefore := now.Add(-5 * time.Minute)
	got := list(t, h.Store, outbox.Filter{DueBefore: staleBefore})
	if !slices.Equal(entityIDs(got), []string{"old", "retrying"}) {
		t.Fatalf("stale events %v, want old and retrying", entityIDs(got))
	}
	for _, e := range got {
		if !e.IsStale(now, 5*time.Minute) {
			t.Fatalf("store lists %s as stale but Event.IsStale disagrees", e.EntityID)
		}
	}
	if st := stats(t, h.Store, outbox.StatsQuery{Now: now, StaleAfter: 5 * time.Minute}); st.Stale != 2 {
		t.Fatalf("Stats.Stale = %d, want 2", st.Stale)
	}
}
