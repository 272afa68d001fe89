package outboxtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

func testSettle(t *testing.T, h Harness) {
	evs := []*outbox.Event{event("t", "ok", "u"), event("t", "retry", "u"), event("t", "dead", "u"), event("t", "unstarted", "u")}
	mustEnqueue(t, h.Store, T0, evs...)
	claim(t, h.Store, "a", T0, 10)
	at := T0.Add(2 * time.Second)
	next := at.Add(5 * time.Second)
	settle(t, h.Store, "a", at,
		outbox.Outcome{ID: evs[0].ID, Result: outbox.Delivered},
		outbox.Outcome{ID: evs[1].ID, Result: outbox.Failed, Error: "503 Service Unavailable", NextAttemptAt: next},
		outbox.Outcome{ID: evs[2].ID, Result: outbox.Failed, Error: "400 Bad Request"},
		outbox.Outcome{ID: evs[3].ID, Result: outbox.Released},
	)
	ok := get(t, h.Store, evs[0].ID)
	if ok.Status != outbox.StatusCompleted || !ok.CompletedAt.Equal(at) || ok.LeaseOwner != "" {
		t.Errorf("delivered: status %q completed %v owner %q", ok.Status, ok.CompletedAt, ok.LeaseOwner)
	}
	r := get(t, h.Store, evs[1].ID)
	if r.Status != outbox.StatusFailed || !r.NextAttemptAt.Equal(next) || r.GivenUp() || r.LastError != "503 Service Unavailable" ||
		len(r.Errors) != 1 || r.Errors[0] != (outbox.AttemptError{Attempt: 1, At: at, Error: "503 Service Unavailable"}) {
		t.Errorf("retrying: %+v", r)
	}
	d := get(t, h.Store, evs[2].ID)
	if !d.GivenUp() || d.LastError != "400 Bad Request" {
		t.Errorf("given up: status %q next %v error %q", d.Status, d.NextAttemptAt, d.LastError)
	}
	u := get(t, h.Store, evs[3].ID)
	if u.Status != outbox.StatusPending || u.Attempts != 0 || u.LeaseOwner != "" {
		t.Errorf("released: status %q attempts %d owner %q, want pending, 0, none", u.Status, u.Attempts, u.LeaseOwner)
	}
	if got := claim(t, h.Store, "b", at, 10); len(got) != 1 || got[0].ID != evs[3].ID {
		t.Errorf("after settling only the released event is due; claimed %v", entityIDs(got))
	}
}

func testSettleNotHeld(t *testing.T, h Harness) {
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: e.ID, Result: outbox.Delivered})
	if got := get(t, h.Store, e.ID); got.Status != outbox.StatusPending {
		t.Fatalf("an unclaimed event was settled: status %q", got.Status)
	}
}

func testRetryDue(t *testing.T, h Harness) {
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "a", T0, 1)
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "boom", NextAttemptAt: T0.Add(time.Second)})
	if got := claim(t, h.Store, "a", T0.Add(999*time.Millisecond), 1); len(got) != 0 {
		t.Fatalf("claimed 1ms before its retry time")
	}
	got := claim(t, h.Store, "a", T0.Add(time.Second), 1)
	if len(got) != 1 || got[0].Attempts != 2 {
		t.Fatalf("not claimed at its retry time (got %d events)", len(got))
	}
}

func testOrderingKey(t *testing.T, h Harness) {
	k1, k2, k3 := event("t", "k-first", "u"), event("t", "k-second", "u"), event("t", "k-third", "u")
	for _, e := range []*outbox.Event{k1, k2, k3} {
		e.OrderingKey = "k"
	}
	k3.Priority = 100 // priority never lets an event overtake its key
	other := event("t", "other", "u")
	other.OrderingKey = "other-key"
	free := event("t", "free", "u")
	mustEnqueue(t, h.Store, T0, k1, k2, k3, other, free)

	got := claim(t, h.Store, "a", T0, 10)
	if !slices.Equal(entityIDs(got), []string{"k-first", "other", "free"}) {
		t.Fatalf("first claim %v, want the head of k, the other key, and the unkeyed event", entityIDs(got))
	}
	// A failed head still holds its key while it waits for its retry.
	settle(t, h.Store, "a", T0,
		outbox.Outcome{ID: k1.ID, Result: outbox.Failed, Error: "x", NextAttemptAt: T0.Add(time.Second)},
		outbox.Outcome{ID: other.ID, Result: outbox.Delivered},
		outbox.Outcome{ID: free.ID, Result: outbox.Delivered})
	if got := claim(t, h.Store, "a", T0.Add(time.Hour), 10); !slices.Equal(entityIDs(got), []string{"k-first"}) {
		t.Fatalf("with the head retrying, claimed %v; want only the head", entityIDs(got))
	}
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: k1.ID, Result: outbox.Delivered})
	if got := claim(t, h.Store, "a", T0.Add(time.Hour), 10); !slices.Equal(entityIDs(got), []string{"k-second"}) {
		t.Fatalf("after the head completed, claimed %v; want k-second", entityIDs(got))
	}
}

func testGivenUpHeadBlocks(t *testing.T, h Harness) {
	head, next := event("t", "head", "u"), event("t", "next", "u")
	head.OrderingKey, next.OrderingKey = "k", "k"
	mustEnqueue(t, h.Store, T0, head, next)
	claim(t, h.Store, "a", T0, 10)
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: head.ID, Result: outbox.Failed, Error: "permanent"})

	if got := claim(t, h.Store, "a", T0, 10); len(got) != 0 {
		t.Fatalf("claimed %v behind a given-up head", entityIDs(got))
	}
	if st := stats(t, h.Store, outbox.StatsQuery{Now: T0, StaleAfter: time.Minute}); st.Blocked != 1 || st.GivenUp != 1 {
		t.Fatalf("stats: blocked %d given up %d, want 1 and 1", st.Blocked, st.GivenUp)
	}
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "a", Now: T0, LeaseUntil: T0.Add(time.Minute), Limit: 10, SkipGivenUp: true})
	if !slices.Equal(entityIDs(got), []string{"next"}) {
		t.Fatalf("with SkipGivenUp claimed %v, want next", entityIDs(got))
	}
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: next.ID, Result: outbox.Released})
	// The operator retries the head: it goes first again, and next still waits.
	if n, err := h.Store.Retry(context.Background(), T0, outbox.Filter{IDs: []string{head.ID}}); err != nil || n != 1 {
		t.Fatalf("Retry(head) = %d, %v", n, err)
	}
	if got := claim(t, h.Store, "a", T0, 10); !slices.Equal(entityIDs(got), []string{"head"}) {
		t.Fatalf("after retrying the head claimed %v, want head", entityIDs(got))
	}
}

// A Released outcome may carry a reason (the processor holds an event while its
// destination is broken): it becomes LastError, so that operators see why the event
// waits, but the attempt does not count, the history is left as it is, and the event
// is due again at once. A Released outcome without a reason keeps LastError.
func testSettleReleasedKeepsItsReason(t *testing.T, h Harness) {
	const reason = "destination held: credentials rejected (401 Unauthorized from https://hooks.example.com/outbox)"
	const reason2 = "destination held: unreachable (dial tcp 10.0.0.7:443: connect: connection refused)"
	fresh, retried := event("t", "fresh", "u"), event("t", "retried", "u")
	mustEnqueue(t, h.Store, T0, fresh, retried)
	claim(t, h.Store, "a", T0, 10)
	at1, next := T0.Add(time.Second), T0.Add(5*time.Second)
	failure := outbox.AttemptError{Attempt: 1, At: at1, Error: "503 Service Unavailable"}
	settle(t, h.Store, "a", at1,
		outbox.Outcome{ID: fresh.ID, Result: outbox.Released, Error: reason},
		outbox.Outcome{ID: retried.ID, Result: outbox.Failed, Error: failure.Error, NextAttemptAt: next})
	f := get(t, h.Store, fresh.ID)
	if f.Status != outbox.StatusPending || f.Attempts != 0 || f.LeaseOwner != "" || f.LastError != reason ||
		len(f.Errors) != 0 || !f.UpdatedAt.Equal(at1) {
		t.Errorf("released with a reason: status %q attempts %d owner %q last error %q errors %v updated %v;"+
			" want pending, 0, none, the reason, no history, %v", f.Status, f.Attempts, f.LeaseOwner, f.LastError, f.Errors, f.UpdatedAt, at1)
	}

	// Both again, the one that failed once now due: released together, one with a
	// reason and one without.
	if got := claim(t, h.Store, "a", next, 10); !slices.Equal(entityIDs(got), []string{"fresh", "retried"}) {
		t.Fatalf("claimed %v, want fresh and retried", entityIDs(got))
	}
	at2 := next.Add(time.Second)
	settle(t, h.Store, "a", at2,
		outbox.Outcome{ID: fresh.ID, Result: outbox.Released},
		outbox.Outcome{ID: retried.ID, Result: outbox.Released, Error: reason2})
	f = get(t, h.Store, fresh.ID)
	if f.Status != outbox.StatusPending || f.Attempts != 0 || f.LastError != reason || len(f.Errors) != 0 {
		t.Errorf("released without a reason: status %q attempts %d last error %q errors %v; want pending, 0, the earlier reason kept, no history",
			f.Status, f.Attempts, f.LastError, f.Errors)
	}
	r := get(t, h.Store, retried.ID)
	if r.Status != outbox.StatusFailed || r.GivenUp() || r.NextAttemptAt.After(at2) || r.Attempts != 1 || r.LeaseOwner != "" ||
		r.LastError != reason2 || len(r.Errors) != 1 || r.Errors[0] != failure {
		t.Errorf("released after a failure: status %q next %v attempts %d owner %q last error %q errors %v;"+
			" want failed and due, 1, none, the reason, only the counted failure %v",
			r.Status, r.NextAttemptAt, r.Attempts, r.LeaseOwner, r.LastError, r.Errors, failure)
	}

	// Neither spent an attempt nor waits: both are claimable at once.
	got := claim(t, h.Store, "b", at2, 10)
	if !slices.Equal(entityIDs(got), []string{"fresh", "retried"}) || got[0].Attempts != 1 || got[1].Attempts != 2 {
		t.Fatalf("after the releases claimed %v (attempts %v), want fresh (1) and retried (2)", entityIDs(got), attemptsOf(got))
	}
}

func attemptsOf(events []outbox.Event) []int {
	out := make([]int, len(events))
	for i, e := range events {
		out[i] = e.Attempts
	}
	return out
}
