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
	"github.com/google/uuid"
)

// Harness is one fresh, migrated, empty store for one test.
type Harness struct {
	Store outbox.Store
	// EnqueueInTx writes events with the store's transactional enqueue inside a
	// transaction of the store's own kind, then commits it (commit true) or rolls it back.
	EnqueueInTx func(ctx context.Context, commit bool, events ...*outbox.Event) error
}

// T0 is the time the suite's clocks start at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Run runs the conformance suite. newHarness is called once per subtest and must
// return an empty store; it should register its own cleanup with t.Cleanup.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"EnqueueFillsAndRoundTrips", testEnqueueRoundTrip},
		{"EnqueueInRolledBackTxLeavesNothing", testEnqueueRolledBack},
		{"EnqueueInvalidWritesNothing", testEnqueueInvalid},
		{"GetUnknownIsNotFound", testGetNotFound},
		{"ClaimOrdersByPriorityThenSeq", testClaimPriority},
		{"ClaimLeasesAndCountsAttempt", testClaimLeases},
		{"ClaimServesOneUser", testClaimUser},
		{"ConcurrentClaimsNeverOverlap", testConcurrentClaims},
		{"ExpiredLeaseIsClaimedAgain", testLeaseExpiry},
		{"ExpiredLeaseWithoutAttemptsLeftIsGivenUp", testLeaseExpiryGivesUp},
		{"ExtendLeaseKeepsEventsAndReportsLost", testExtendLease},
		{"SettleRecordsEachOutcome", testSettle},
		{"SettleSkipsEventsNotHeld", testSettleNotHeld},
		{"RetryIsDueOnlyAtItsTime", testRetryDue},
		{"OrderingKeyDeliversOneAtATimeInOrder", testOrderingKey},
		{"GivenUpHeadBlocksItsKey", testGivenUpHeadBlocks},
		{"DeleteCompletedRemovesOnlyOldCompleted", testDeleteCompleted},
		{"StatsCountByStatusTypeAndUser", testStats},
		{"StaleEventsAreListedAndCounted", testStale},
		{"UpdateWritesBackResetForRetry", testUpdate},
		{"RetryResetsMatchingEvents", testRetry},
		{"DeleteRemovesEvents", testDelete},
		{"ListFiltersAndPages", testList},
		{"ProcessorBacksOffThenGivesUp", testProcessorBackoff},
		{"ProcessorGivesUpPermanentErrorsAtOnce", testProcessorPermanent},
		{"ProcessorKeepsKeyOrderUnderConcurrency", testProcessorOrdering},
		{"ProcessorHealthRaisesTheDefaultAlerts", testProcessorHealth},
		{"NotifierWakesOnCommit", testNotifier},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.fn(t, h)
		})
	}
}

// event returns a valid event for tests.
func event(typ, entity, user string) *outbox.Event {
	return outbox.NewEvent(typ, entity, user)
}

func mustEnqueue(t *testing.T, s outbox.Store, now time.Time, events ...*outbox.Event) {
	t.Helper()
	if err := s.Enqueue(context.Background(), now, events...); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

func claim(t *testing.T, s outbox.Store, owner string, now time.Time, limit int) []outbox.Event {
	t.Helper()
	return claimWith(t, s, outbox.ClaimParams{Owner: owner, Now: now, LeaseUntil: now.Add(30 * time.Second), Limit: limit})
}

func claimWith(t *testing.T, s outbox.Store, p outbox.ClaimParams) []outbox.Event {
	t.Helper()
	events, err := s.Claim(context.Background(), p)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return events
}

func settle(t *testing.T, s outbox.Store, owner string, now time.Time, outcomes ...outbox.Outcome) {
	t.Helper()
	if err := s.Settle(context.Background(), owner, now, outcomes); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

func get(t *testing.T, s outbox.Store, id string) outbox.Event {
	t.Helper()
	e, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return e
}

func ids(events []outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func entityIDs(events []outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EntityID
	}
	return out
}

func list(t *testing.T, s outbox.Store, f outbox.Filter) []outbox.Event {
	t.Helper()
	events, err := s.List(context.Background(), f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return events
}

func stats(t *testing.T, s outbox.Store, q outbox.StatsQuery) outbox.Stats {
	t.Helper()
	st, err := s.Stats(context.Background(), q)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func testEnqueueRoundTrip(t *testing.T, h Harness) {
	e := event("order.created", "entry-1", "user-1")
	e.Priority = 10
	e.IsNewRecord = true
	e.Metadata = map[string]string{"source": "manual_entry", "app_version": "1.0.0"}
	e.Payload = []byte(`{"amount":72.5}`)
	e.OrderingKey = "entry-1"
	e.MaxAttempts = 7
	now := T0.Add(123456789 * time.Nanosecond)
	mustEnqueue(t, h.Store, now, e)

	id, err := uuid.Parse(e.ID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("ID = %q: want a UUIDv7 (err %v)", e.ID, err)
	}
	if e.Seq <= 0 || e.Status != outbox.StatusPending || e.Attempts != 0 {
		t.Fatalf("after enqueue: seq %d status %q attempts %d; want seq > 0, pending, 0", e.Seq, e.Status, e.Attempts)
	}
	want := outbox.Timestamp(now)
	if !e.CreatedAt.Equal(want) || !e.NextAttemptAt.Equal(want) {
		t.Fatalf("CreatedAt %v NextAttemptAt %v, want both %v", e.CreatedAt, e.NextAttemptAt, want)
	}
	got := get(t, h.Store, e.ID)
	if d := diffJSON(*e, got); d != "" {
		t.Fatalf("Get returned a different event: %s", d)
	}
}

func testEnqueueRolledBack(t *testing.T, h Harness) {
	ctx := context.Background()
	rolledBack := event("order.created", "gone", "u")
	if err := h.EnqueueInTx(ctx, false, rolledBack); err != nil {
		t.Fatalf("EnqueueInTx(rollback): %v", err)
	}
	if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
		t.Fatalf("after rollback the store holds %d events, want 0", len(got))
	}
	if _, err := h.Store.Get(ctx, rolledBack.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Get of rolled-back event: %v, want ErrNotFound", err)
	}
	kept := event("order.created", "kept", "u")
	if err := h.EnqueueInTx(ctx, true, kept); err != nil {
		t.Fatalf("EnqueueInTx(commit): %v", err)
	}
	if got := list(t, h.Store, outbox.Filter{}); len(got) != 1 || got[0].ID != kept.ID {
		t.Fatalf("after commit the store holds %v, want [%s]", ids(got), kept.ID)
	}
}

func testEnqueueInvalid(t *testing.T, h Harness) {
	big := make([]byte, outbox.DefaultMaxPayloadBytes+1)
	for i := range big {
		big[i] = ' '
	}
	copy(big, `"x"`)
	tests := []struct {
		name  string
		event *outbox.Event
		field string
	}{
		{"empty type", event("", "e", "u"), "Type"},
		{"empty entity ID", event("t", "", "u"), "EntityID"},
		{"payload over the limit", &outbox.Event{Type: "t", EntityID: "e", Payload: big}, "Payload"},
		{"invalid JSON payload", &outbox.Event{Type: "t", EntityID: "e", Payload: []byte(`{"amount":`)}, "Payload"},
		{"unknown status", &outbox.Event{Type: "t", EntityID: "e", Status: "done"}, "Status"},
		{"negative max attempts", &outbox.Event{Type: "t", EntityID: "e", MaxAttempts: -1}, "MaxAttempts"},
		{"malformed ID", &outbox.Event{ID: "not-a-uuid", Type: "t", EntityID: "e"}, "ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := event("t", "good", "u")
			err := h.Store.Enqueue(context.Background(), T0, good, tc.event)
			var fe *outbox.FieldError
			if !errors.Is(err, outbox.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Enqueue: %v; want an ErrInvalid FieldError naming %s", err, tc.field)
			}
			if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
				t.Fatalf("a rejected batch wrote %d events, want none", len(got))
			}
			if err := h.EnqueueInTx(context.Background(), true, event("t", "good", "u"), tc.event); !errors.Is(err, outbox.ErrInvalid) {
				t.Fatalf("EnqueueInTx: %v, want ErrInvalid", err)
			}
			if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
				t.Fatalf("a rejected transactional batch wrote %d events, want none", len(got))
			}
		})
	}
}

func testGetNotFound(t *testing.T, h Harness) {
	_, err := h.Store.Get(context.Background(), uuid.NewString())
	if !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
}

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
	for w := range workers {
		owner := fmt.Sprintf("relay-%d", w)
		wg.Go(func() {
			for idle := 0; idle < 3; {
				got, err := h.Store.Claim(context.Background(), outbox.ClaimParams{
					Owner: owner, Now: T0, LeaseUntil: T0.Add(time.Hour), Limit: 7})
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					idle++
					continue
				}
				idle = 0
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

func testDeleteCompleted(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for i := range 5 {
		evs = append(evs, event("t", fmt.Sprintf("e%d", i), "u"))
	}
	mustEnqueue(t, h.Store, T0, evs...)
	claim(t, h.Store, "a", T0, 10)
	// e0..e2 complete at T0+i hours; e3 fails (kept however old); e4 stays processing.
	for i := range 3 {
		settle(t, h.Store, "a", T0.Add(time.Duration(i)*time.Hour), outbox.Outcome{ID: evs[i].ID, Result: outbox.Delivered})
	}
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: evs[3].ID, Result: outbox.Failed, Error: "x"})

	ctx := context.Background()
	n, err := h.Store.DeleteCompleted(ctx, T0.Add(90*time.Minute), 1)
	if err != nil || n != 1 {
		t.Fatalf("DeleteCompleted(limit 1) = %d, %v; want 1", n, err)
	}
	n, err = h.Store.DeleteCompleted(ctx, T0.Add(90*time.Minute), 100)
	if err != nil || n != 1 {
		t.Fatalf("DeleteCompleted = %d, %v; want the one remaining before the cut", n, err)
	}
	left := entityIDs(list(t, h.Store, outbox.Filter{}))
	if !slices.Equal(left, []string{"e2", "e3", "e4"}) {
		t.Fatalf("left %v, want e2 (completed after the cut), e3 (failed), e4 (processing)", left)
	}
}

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
		OldestPendingAge: time.Minute, // evs[3], created at T0, still waiting
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
	wantAlice := outbox.Stats{Total: 5, Pending: 1, Completed: 3, Failed: 1, OldestPendingAge: time.Minute,
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

func testUpdate(t *testing.T, h Harness) {
	// A failed event, reset for retry, is pending and can retry.
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "o", T0, 1)
	settle(t, h.Store, "o", T0, outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "x"})
	ev := get(t, h.Store, e.ID)
	ev.ResetForRetry(T0.Add(time.Minute))
	ev.Priority = 3
	ev.Metadata = map[string]string{"retried_by": "test"}
	if err := h.Store.Update(context.Background(), T0.Add(time.Minute), &ev); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got := get(t, h.Store, e.ID)
	if got.Status != outbox.StatusPending || !got.CanRetry() || got.Attempts != 0 || got.Priority != 3 ||
		got.Metadata["retried_by"] != "test" || len(got.Errors) != 1 {
		t.Fatalf("after Update: %+v", got)
	}
	claim(t, h.Store, "o", T0.Add(time.Minute), 1)
	held := get(t, h.Store, e.ID)
	held.ResetForRetry(T0.Add(time.Minute))
	if err := h.Store.Update(context.Background(), T0.Add(time.Minute), &held); !errors.Is(err, outbox.ErrLeased) {
		t.Fatalf("Update of a leased event: %v, want ErrLeased", err)
	}
	missing := outbox.Event{ID: uuid.NewString(), Status: outbox.StatusPending}
	if err := h.Store.Update(context.Background(), T0, &missing); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Update of a missing event: %v, want ErrNotFound", err)
	}
}

func testRetry(t *testing.T, h Harness) {
	gu1, gu2, retrying, done, pending := event("a", "gu1", "u"), event("b", "gu2", "u"), event("a", "retrying", "u"), event("a", "done", "u"), event("a", "pending", "u")
	mustEnqueue(t, h.Store, T0, gu1, gu2, retrying, done)
	claim(t, h.Store, "o", T0, 10)
	settle(t, h.Store, "o", T0,
		outbox.Outcome{ID: gu1.ID, Result: outbox.Failed, Error: "x"},
		outbox.Outcome{ID: gu2.ID, Result: outbox.Failed, Error: "x"},
		outbox.Outcome{ID: retrying.ID, Result: outbox.Failed, Error: "x", NextAttemptAt: T0.Add(time.Hour)},
		outbox.Outcome{ID: done.ID, Result: outbox.Delivered},
	)
	mustEnqueue(t, h.Store, T0, pending)
	ctx := context.Background()
	n, err := h.Store.Retry(ctx, T0.Add(time.Second), outbox.Filter{GivenUp: true, Type: "a"})
	if err != nil || n != 1 {
		t.Fatalf("Retry(given up, type a) = %d, %v; want 1", n, err)
	}
	if g := get(t, h.Store, gu1.ID); g.Status != outbox.StatusPending || g.Attempts != 0 || len(g.Errors) != 1 {
		t.Fatalf("retried event: status %q attempts %d errors %d; want pending, 0, history kept", g.Status, g.Attempts, len(g.Errors))
	}
	n, err = h.Store.Retry(ctx, T0.Add(time.Second), outbox.Filter{})
	if err != nil || n != 2 {
		t.Fatalf("Retry(all failed) = %d, %v; want 2 (gu2 and retrying)", n, err)
	}
	if d := get(t, h.Store, done.ID); d.Status != outbox.StatusCompleted {
		t.Fatalf("Retry touched a completed event: %q", d.Status)
	}
	claim(t, h.Store, "o", T0.Add(2*time.Second), 10)
	n, err = h.Store.Retry(ctx, T0.Add(2*time.Second), outbox.Filter{Status: outbox.StatusProcessing})
	if err != nil || n != 0 {
		t.Fatalf("Retry of leased events = %d, %v; want 0", n, err)
	}
}

func testDelete(t *testing.T, h Harness) {
	a, b := event("t", "a", "u"), event("t", "b", "u")
	mustEnqueue(t, h.Store, T0, a, b)
	n, err := h.Store.Delete(context.Background(), a.ID, uuid.NewString())
	if err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1", n, err)
	}
	if left := entityIDs(list(t, h.Store, outbox.Filter{})); !slices.Equal(left, []string{"b"}) {
		t.Fatalf("left %v", left)
	}
}

func testList(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for i := range 7 {
		typ := "a"
		if i%2 == 1 {
			typ = "b"
		}
		evs = append(evs, event(typ, fmt.Sprintf("e%d", i), []string{"x", "y"}[i%3/2]))
	}
	mustEnqueue(t, h.Store, T0, evs...)
	claim(t, h.Store, "o", T0, 2) // e0, e1 processing
	tests := []struct {
		name string
		f    outbox.Filter
		want []string
	}{
		{"all", outbox.Filter{}, []string{"e0", "e1", "e2", "e3", "e4", "e5", "e6"}},
		{"status", outbox.Filter{Status: outbox.StatusProcessing}, []string{"e0", "e1"}},
		{"type", outbox.Filter{Type: "b"}, []string{"e1", "e3", "e5"}},
		{"user", outbox.Filter{UserID: "y"}, []string{"e2", "e5"}},
		{"ids", outbox.Filter{IDs: []string{evs[4].ID, evs[6].ID}}, []string{"e4", "e6"}},
		{"limit", outbox.Filter{Limit: 3}, []string{"e0", "e1", "e2"}},
		{"page", outbox.Filter{AfterSeq: evs[2].Seq, Limit: 3}, []string{"e3", "e4", "e5"}},
		{"combined", outbox.Filter{Status: outbox.StatusPending, Type: "a", UserID: "x"}, []string{"e4", "e6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := entityIDs(list(t, h.Store, tc.f)); !slices.Equal(got, tc.want) {
				t.Fatalf("List(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
	if _, err := h.Store.List(context.Background(), outbox.Filter{Status: "done"}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("List with an unknown status: %v, want ErrInvalid", err)
	}
}

func testNotifier(t *testing.T, h Harness) {
	n, ok := h.Store.(outbox.Notifier)
	if !ok {
		t.Skip("store does not implement outbox.Notifier")
	}
	wake, cancel := n.Subscribe("")
	defer cancel()
	mustEnqueue(t, h.Store, T0, event("t", "e", "u"))
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up within 10s of a committed enqueue")
	}
}
