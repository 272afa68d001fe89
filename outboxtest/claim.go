package outboxtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

func testClaimPriority(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for i, p := range []int{0, 10, 0, 5, 10} {
		e := event("t", fmt.Sprintf("e%d", i), "u")
		e.Priority = p
		evs = append(evs, e)
	}
	mustEnqueue(t, h.Store, T0, evs...)
	got := claim(t, h.Store, "a", T0, 10)
	want := []string{"e1", "e4", "e3", "e0", "e2"}
	if !slices.Equal(entityIDs(got), want) {
		t.Fatalf("claim order %v, want %v (priority desc, then seq)", entityIDs(got), want)
	}
}

func testClaimLeases(t *testing.T, h Harness) {
	mustEnqueue(t, h.Store, T0, event("t", "e1", "u"), event("t", "e2", "u"), event("t", "e3", "u"))
	now := T0.Add(time.Second)
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "relay-a", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 2})
	if len(got) != 2 {
		t.Fatalf("claimed %d events with limit 2", len(got))
	}
	for _, e := range got {
		stored := get(t, h.Store, e.ID)
		for _, ev := range []outbox.Event{e, stored} {
			if ev.Status != outbox.StatusProcessing || ev.Attempts != 1 || ev.LeaseOwner != "relay-a" ||
				!ev.LeaseExpiresAt.Equal(now.Add(time.Minute)) || !ev.LastAttemptAt.Equal(now) {
				t.Fatalf("claimed event: status %q attempts %d owner %q lease %v last attempt %v",
					ev.Status, ev.Attempts, ev.LeaseOwner, ev.LeaseExpiresAt, ev.LastAttemptAt)
			}
		}
	}
	rest := claim(t, h.Store, "relay-b", now, 10)
	if len(rest) != 1 || rest[0].EntityID != "e3" {
		t.Fatalf("second relay claimed %v, want only e3", entityIDs(rest))
	}
	if again := claim(t, h.Store, "relay-c", now, 10); len(again) != 0 {
		t.Fatalf("a third claim took %v, want nothing while leases are live", entityIDs(again))
	}
}

func testClaimUser(t *testing.T, h Harness) {
	mustEnqueue(t, h.Store, T0, event("t", "a1", "alice"), event("t", "b1", "bob"), event("t", "a2", "alice"))
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "o", Now: T0, LeaseUntil: T0.Add(time.Minute), Limit: 10, UserID: "alice"})
	if !slices.Equal(entityIDs(got), []string{"a1", "a2"}) {
		t.Fatalf("claim for alice got %v", entityIDs(got))
	}
}

func testConcurrentClaims(t *testing.T, h Harness) {
	const n, workers = 300, 6
	var evs []*outbox.Event
	for i := range n {
		e := event("t", fmt.Sprintf("e%d", i), "u")
		if i%3 == 0 {
			e.OrderingKey = fmt.Sprintf("k%d", i%30) // keys must not break exclusivity either
		}
		evs = append(evs, e)
	}
	mustEnqueue(t, h.Store, T0, evs...)
	var (
		mu      sync.Mutex
		claimed = map[string]string{}
		wg      sync.WaitGroup
		errs    = make(chan error, workers)
	)
	// Workers go on until every event is claimed: an empty claim only means that the
	// heads of the keys are in another worker's hands for now (a worker that gave up
	// after a few empty claims left keyed events unclaimed on a busy machine). The
	// deadline only ends a run that would never finish.
	deadline := time.Now().Add(time.Minute)
	for w := range workers {
		owner := fmt.Sprintf("relay-%d", w)
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(claimed) == n
				mu.Unlock()
				if done || time.Now().After(deadline) {
					return
				}
				got, err := h.Store.Claim(context.Background(), outbox.ClaimParams{
					Owner: owner, Now: T0, LeaseUntil: T0.Add(time.Hour), Limit: 7})
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					time.Sleep(time.Millisecond) // let the worker holding a key's head settle it
					continue
				}
				mu.Lock()
				for _, e := range got {
					if prev, dup := claimed[e.ID]; dup {
						errs <- fmt.Errorf("event %s claimed by %s and %s", e.EntityID, prev, owner)
					}
					claimed[e.ID] = owner
				}
				mu.Unlock()
				// Settle completes them, releasing the next event of each key.
				var outs []outbox.Outcome
				for _, e := range got {
					outs = append(outs, outbox.Outcome{ID: e.ID, Result: outbox.Delivered})
				}
				if err := h.Store.Settle(context.Background(), owner, T0, outs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(claimed) != n {
		t.Fatalf("%d of %d events were claimed", len(claimed), n)
	}
}

func testLeaseExpiry(t *testing.T, h Harness) {
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "dead-relay", T0, 1) // lease until T0+30s, never settled

	if got := claim(t, h.Store, "b", T0.Add(29*time.Second), 1); len(got) != 0 {
		t.Fatalf("claimed under a live lease: %v", entityIDs(got))
	}
	at := T0.Add(30 * time.Second)
	got := claim(t, h.Store, "b", at, 1)
	if len(got) != 1 || got[0].ID != e.ID {
		t.Fatalf("expired lease not reclaimed: got %v", entityIDs(got))
	}
	if got[0].Attempts != 2 || got[0].LeaseOwner != "b" {
		t.Fatalf("reclaimed event: attempts %d owner %q, want 2 and b", got[0].Attempts, got[0].LeaseOwner)
	}
	if len(got[0].Errors) != 1 || got[0].Errors[0].Attempt != 1 || got[0].LastError == "" {
		t.Fatalf("the lost attempt is not in the history: %+v (last error %q)", got[0].Errors, got[0].LastError)
	}
	// The dead relay comes back and reports success: it no longer holds the event.
	settle(t, h.Store, "dead-relay", at, outbox.Outcome{ID: e.ID, Result: outbox.Delivered})
	if s := get(t, h.Store, e.ID); s.Status != outbox.StatusProcessing || s.LeaseOwner != "b" {
		t.Fatalf("a stale owner's outcome was recorded: status %q owner %q", s.Status, s.LeaseOwner)
	}
}

func testLeaseExpiryGivesUp(t *testing.T, h Harness) {
	e := event("t", "e", "u")
	e.MaxAttempts = 1
	other := event("t", "default-budget", "u")
	mustEnqueue(t, h.Store, T0, e, other)
	claim(t, h.Store, "dead", T0, 2)
	at := T0.Add(time.Minute)
	got := claimWith(t, h.Store, outbox.ClaimParams{Owner: "b", Now: at, LeaseUntil: at.Add(time.Minute), Limit: 10, DefaultMaxAttempts: 1})
	if len(got) != 0 {
		t.Fatalf("claimed %v; want none: both used their only attempt", entityIDs(got))
	}
	for _, id := range []string{e.ID, other.ID} {
		if s := get(t, h.Store, id); !s.GivenUp() || s.LastError == "" {
			t.Fatalf("event %s: status %q next %v error %q; want given up with the lease error", s.EntityID, s.Status, s.NextAttemptAt, s.LastError)
		}
	}
}

func testExtendLease(t *testing.T, h Harness) {
	mine, theirs := event("t", "mine", "u"), event("t", "theirs", "u")
	mustEnqueue(t, h.Store, T0, mine)
	claim(t, h.Store, "a", T0, 1)
	mustEnqueue(t, h.Store, T0, theirs)
	claim(t, h.Store, "b", T0, 1)

	until := T0.Add(10 * time.Minute)
	lost, err := h.Store.ExtendLease(context.Background(), "a", []string{mine.ID, theirs.ID}, until)
	if err != nil {
		t.Fatalf("ExtendLease: %v", err)
	}
	if !slices.Equal(lost, []string{theirs.ID}) {
		t.Fatalf("lost = %v, want [%s]", lost, theirs.ID)
	}
	if got := get(t, h.Store, mine.ID); !got.LeaseExpiresAt.Equal(until) {
		t.Fatalf("lease expires %v, want %v", got.LeaseExpiresAt, until)
	}
	if got := claim(t, h.Store, "c", T0.Add(5*time.Minute), 10); len(got) != 1 || got[0].ID != theirs.ID {
		t.Fatalf("after extension only the unextended lease should expire; claimed %v", entityIDs(got))
	}
}
