package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

func keyed(entity, key string) *outbox.Event {
	e := outbox.NewEvent("order.created", entity, "u")
	e.OrderingKey = key
	return e
}

func claimAt(t *testing.T, s *postgres.Store, owner string, now time.Time) []outbox.Event {
	t.Helper()
	got, err := s.Claim(context.Background(), outbox.ClaimParams{Owner: owner, Now: now, LeaseUntil: now.Add(time.Minute), Limit: 10})
	if err != nil {
		t.Fatalf("Claim(%s): %v", owner, err)
	}
	return got
}

func entities(events []outbox.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.EntityID)
	}
	return out
}

// An event's seq is taken when it is inserted, but it becomes visible when its
// transaction commits: an earlier seq can appear after a later one of the same key was
// claimed. It must then wait for that one, not join it in flight.
func TestOrderingKeyEventCommittedLateWaitsForTheOneInFlight(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	ctx := context.Background()
	late, early := keyed("late", "k"), keyed("early", "k")

	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := s.EnqueueTx(ctx, tx, late); err != nil { // the lower seq, committed last
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, outboxtest.T0, early); err != nil {
		t.Fatal(err)
	}
	if late.Seq >= early.Seq {
		t.Fatalf("seqs %d and %d: the test needs the uncommitted event first", late.Seq, early.Seq)
	}
	if got := claimAt(t, s, "a", outboxtest.T0); !slices.Equal(entities(got), []string{"early"}) {
		t.Fatalf("first claim %v, want [early]: the only visible event of k", entities(got))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := claimAt(t, s, "b", outboxtest.T0); len(got) != 0 {
		t.Fatalf("claimed %v while early (key k) is in flight", entities(got))
	}
	if err := s.Settle(ctx, "a", outboxtest.T0, []outbox.Outcome{{ID: early.ID, Result: outbox.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if got := claimAt(t, s, "b", outboxtest.T0); !slices.Equal(entities(got), []string{"late"}) {
		t.Fatalf("after early completed, claimed %v; want [late]", entities(got))
	}
}

// Two claims whose snapshots straddle a commit can each see a different head of one
// key: here claimer B holds "early" in an uncommitted claim while "late" (a lower seq)
// commits, so claimer C's snapshot shows late as the key's head and early as pending.
// The key_in_flight unique index makes C wait for B and then fail; the store claims
// again and sees B's claim. Without the index both would be in flight.
func TestOrderingKeyClaimsRacingFromDifferentSnapshots(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 4, "")
	s := newStore(t, pool, postgres.Config{})
	ctx := context.Background()
	late, early := keyed("late", "k"), keyed("early", "k")

	lateTx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lateTx.Rollback(ctx)
	if err := s.EnqueueTx(ctx, lateTx, late); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, outboxtest.T0, early); err != nil {
		t.Fatal(err)
	}
	claimTx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer claimTx.Rollback(ctx)
	p := outbox.ClaimParams{Owner: "b", Now: outboxtest.T0, LeaseUntil: outboxtest.T0.Add(time.Minute), Limit: 10}
	got, err := s.ClaimInTx(ctx, claimTx, p)
	if err != nil || !slices.Equal(entities(got), []string{"early"}) {
		t.Fatalf("B's claim: %v, %v; want [early]", entities(got), err)
	}
	if err := lateTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	type result struct {
		events []outbox.Event
		err    error
	}
	done := make(chan result, 1)
	go func() {
		events, err := s.Claim(ctx, outbox.ClaimParams{Owner: "c", Now: outboxtest.T0, LeaseUntil: outboxtest.T0.Add(time.Minute), Limit: 10})
		done <- result{events, err}
	}()
	// Wait until C's claim is blocked behind B's transaction on the index (or, were
	// nothing to stop it, has claimed).
	waitUntil(t, func() bool {
		if len(done) > 0 {
			return true
		}
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND datname = current_database()
			  AND query LIKE '%WITH pending AS%' AND strpos(query, $1) > 0)`, s.Config().Schema).Scan(&waiting)
		return err == nil && waiting
	})
	if err := claimTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("C's claim: %v", r.err)
	}
	if len(r.events) != 0 {
		t.Fatalf("C claimed %v while B holds early of the same key", entities(r.events))
	}
	if n := s.ClaimConflicts(); n != 1 {
		t.Fatalf("claims run again after a key conflict: %d, want 1", n)
	}
	var inFlight int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Config().Schema, s.Config().Table}.Sanitize()+
		` WHERE status = 'processing'`).Scan(&inFlight); err != nil || inFlight != 1 {
		t.Fatalf("%d events in flight (%v), want 1", inFlight, err)
	}
}

// waitUntil polls cond, for conditions that only the database can tell (a backend
// waiting on a lock), failing after a minute: generous, so that a busy machine cannot
// fail it (it costs nothing when the condition comes).
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Several relays claim from a table that writers keep filling, some of their
// transactions committing late (so that seq order and commit order disagree). At no
// moment may two events of one key be in flight.
func TestOrderingKeysNeverTwoInFlightAcrossConcurrentClaimers(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 8, "")
	s := newStore(t, pool, postgres.Config{DisableListen: true})
	ctx := context.Background()
	const (
		writers, perWriter = 3, 100
		claimers           = 4
		keys               = 8
	)
	var (
		mu        sync.Mutex
		inFlight  = map[string]string{} // key -> entity
		delivered = map[string]int{}
		errs      = make(chan error, 100)
		writing   sync.WaitGroup
	)
	for w := range writers {
		writing.Go(func() {
			for i := range perWriter {
				err := s.Transact(ctx, func(tx pgx.Tx) error {
					e := keyed(fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("k%d", rand.IntN(keys)))
					if err := s.EnqueueTx(ctx, tx, e); err != nil {
						return err
					}
					if rand.IntN(4) == 0 {
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // commit late
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { writing.Wait(); close(writersDone) }()

	var claiming sync.WaitGroup
	for c := range claimers {
		owner := fmt.Sprintf("relay-%d", c)
		claiming.Go(func() {
			for finished := false; ; {
				select {
				case <-writersDone:
					finished = true
				default:
				}
				now := time.Now()
				got, err := s.Claim(ctx, outbox.ClaimParams{Owner: owner, Now: now, LeaseUntil: now.Add(time.Hour), Limit: 3})
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 && finished {
					return
				}
				mu.Lock()
				for _, e := range got {
					if other, busy := inFlight[e.OrderingKey]; busy {
						errs <- fmt.Errorf("%s claimed %s while %s of key %s is in flight", owner, e.EntityID, other, e.OrderingKey)
					}
					inFlight[e.OrderingKey] = e.EntityID
				}
				mu.Unlock()
				var outs []outbox.Outcome
				mu.Lock()
				for _, e := range got {
					delete(inFlight, e.OrderingKey) // before Settle: the database still holds it until then
					delivered[e.EntityID]++
					outs = append(outs, outbox.Outcome{ID: e.ID, Result: outbox.Delivered})
				}
				mu.Unlock()
				if err := s.Settle(ctx, owner, time.Now(), outs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	claiming.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(delivered) != writers*perWriter {
		t.Fatalf("%d of %d events delivered", len(delivered), writers*perWriter)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	t.Logf("claims run again after a key conflict: %d", s.ClaimConflicts())
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Config().Schema, s.Config().Table}.Sanitize()+
		` WHERE status <> 'completed'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d events not completed (%v)", left, err)
	}
}

var _ = errors.Is

// The claim's limit is written into its statement (see claimStatements), for the first
// limits a store sees; past them the limit stays a parameter, and claims still take
// exactly that many events.
func TestClaimLimitWrittenIntoTheStatement(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{DisableListen: true})
	ctx := context.Background()
	now := time.Now()
	params := func(limit int) outbox.ClaimParams {
		return outbox.ClaimParams{Owner: "p", Now: now, LeaseUntil: now.Add(time.Minute), Limit: limit}
	}
	for limit := 1; limit <= 20; limit++ {
		query, _, err := s.ClaimStatement(params(limit))
		if err != nil {
			t.Fatal(err)
		}
		literal := strings.Contains(query, fmt.Sprintf("LIMIT %d\n", limit))
		parameter := strings.Contains(query, "@limit")
		if want := limit <= 16; literal != want || parameter == want {
			t.Errorf("limit %d: written into the statement %v, as @limit %v; want written %v", limit, literal, parameter, want)
		}
	}
	events := make([]*outbox.Event, 30)
	for i := range events {
		events[i] = outbox.NewEvent("order.created", fmt.Sprint(i), "u")
	}
	if err := s.Enqueue(ctx, now, events...); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{3, 19} { // one of each kind
		got, err := s.Claim(ctx, params(limit))
		if err != nil || len(got) != limit {
			t.Fatalf("Claim(limit %d) = %d events, %v", limit, len(got), err)
		}
	}
}
