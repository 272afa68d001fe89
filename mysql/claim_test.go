package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/outboxtest"
)

func keyed(entity, key string) *outbox.Event {
	e := outbox.NewEvent("order.created", entity, "u")
	e.OrderingKey = key
	return e
}

func claimAt(t *testing.T, s *mysql.Store, owner string, now time.Time) []outbox.Event {
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

func count(t *testing.T, db *sql.DB, s *mysql.Store, where string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM `" + s.Config().Table + "` WHERE " + where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// An event's seq is taken when it is inserted, but it becomes visible when its
// transaction commits: an earlier seq can appear after a later one of the same key was
// claimed. It must then wait for that one, not join it in flight.
func TestOrderingKeyEventCommittedLateWaitsForTheOneInFlight(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, mysql.Config{})
	ctx := context.Background()
	late, early := keyed("late", "k"), keyed("early", "k")

	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
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
	if err := tx.Commit(); err != nil {
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
// key: claimer B holds "early" in an uncommitted claim while "late" (a lower seq)
// commits, so claimer C's snapshot shows late as the key's head and early as pending.
// MySQL has no partial unique index; the unique index on the generated column
// key_in_flight (the key while processing, NULL otherwise) is its equivalent. It makes
// C wait for B and then fail with a duplicate; the store claims again and sees B's
// claim. Without the index both would be in flight.
func TestOrderingKeyClaimsRacingFromDifferentSnapshots(t *testing.T) {
	t.Parallel()
	for _, level := range []sql.IsolationLevel{sql.LevelReadCommitted, sql.LevelRepeatableRead} {
		t.Run(level.String(), func(t *testing.T) {
			db := openDB(t, 4, nil)
			s := newStore(t, db, mysql.Config{Isolation: level})
			ctx := context.Background()
			late, early := keyed("late", "k"), keyed("early", "k")

			lateTx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer lateTx.Rollback()
			if err := s.EnqueueTx(ctx, lateTx, late); err != nil {
				t.Fatal(err)
			}
			if err := s.Enqueue(ctx, outboxtest.T0, early); err != nil {
				t.Fatal(err)
			}
			claimTx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
			if err != nil {
				t.Fatal(err)
			}
			defer claimTx.Rollback()
			p := outbox.ClaimParams{Owner: "b", Now: outboxtest.T0, LeaseUntil: outboxtest.T0.Add(time.Minute), Limit: 10}
			got, err := s.ClaimInTx(ctx, claimTx, p)
			if err != nil || !slices.Equal(entities(got), []string{"early"}) {
				t.Fatalf("B's claim: %v, %v; want [early]", entities(got), err)
			}
			if err := lateTx.Commit(); err != nil {
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
			// Wait until C's claim is blocked behind B's transaction on the index (or,
			// were nothing to stop it, has claimed).
			table := s.Config().Table
			waitUntil(t, func() bool {
				if len(done) > 0 {
					return true
				}
				// MariaDB lists a transaction waiting on a row lock in the process list as
				// still "Updating"; an update of two rows does not stay there otherwise.
				var waiting int
				err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
					WHERE COMMAND IN ('Query', 'Execute') AND STATE = 'Updating' AND INFO LIKE CONCAT('%', ?, '%')`, table).Scan(&waiting)
				return err == nil && waiting > 0
			})
			if err := claimTx.Commit(); err != nil {
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
			if n := count(t, db, s, "status = 'processing'"); n != 1 {
				t.Fatalf("%d events in flight, want 1", n)
			}
		})
	}
}

// waitUntil polls cond, for conditions that only the database can tell (a
// transaction waiting on a lock), failing after a minute: generous, so that a busy
// machine cannot fail it (it costs nothing when the condition comes).
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

// A locking read locks each row it reads. A claim scoped to other types keeps the lock
// of a row it passed over for its type until its transaction ends, at READ COMMITTED
// too (observed on MariaDB 10.11; a row passed over as not the head of its key is let
// go at once at READ COMMITTED), and every other claim passes over the row with SKIP
// LOCKED until then.
func TestClaimHoldsTheRowsItPassedOverUntilItEnds(t *testing.T) {
	t.Parallel()
	for _, level := range []sql.IsolationLevel{sql.LevelReadCommitted, sql.LevelRepeatableRead} {
		t.Run(level.String(), func(t *testing.T) {
			db := openDB(t, 4, nil)
			s := newStore(t, db, mysql.Config{Isolation: level})
			ctx := context.Background()
			if err := s.Enqueue(ctx, time.Now(), keyed("x", "k")); err != nil {
				t.Fatal(err)
			}
			b, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Rollback()
			now := time.Now()
			got, err := s.ClaimInTx(ctx, b, outbox.ClaimParams{Owner: "b", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 10, Types: []string{"other"}})
			if err != nil || len(got) != 0 {
				t.Fatalf("claim B (other types) = %v, %v; want nothing", entities(got), err)
			}
			if got := claimAt(t, s, "a", now); len(got) != 0 {
				t.Fatalf("claim A took %v while B's transaction is open", entities(got))
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			if got := claimAt(t, s, "a", now); !slices.Equal(entities(got), []string{"x"}) {
				t.Fatalf("after B ended, claimed %v, want [x]", entities(got))
			}
		})
	}
}

// The cause of an empty claim while an event is due, made to happen on purpose. Claim
// B reads with a snapshot from before relay A settled the first event of a key, so it
// passes over the next one (not the head in its snapshot) while holding its lock. A,
// which sees the next event as the head, passes over it with SKIP LOCKED: both claims
// come back empty. Here B's snapshot is its transaction's and the lock is kept until B
// ends (REPEATABLE READ). At READ COMMITTED the snapshot is the statement's and the
// lock is let go once B has looked at the row, so the same happens only when A's
// settle commits while B's locking read runs and A reaches the row in that moment: a
// race, which the relays of TestOrderingKeysNeverTwoInFlightAcrossConcurrentClaimers
// run into now and then. Nothing is lost: the next claim takes the event.
func TestClaimPassesOverADueEventAnotherClaimIsReading(t *testing.T) {
	t.Parallel()
	db := openDB(t, 4, nil)
	s := newStore(t, db, mysql.Config{Isolation: sql.LevelRepeatableRead})
	ctx := context.Background()
	first, next := keyed("first", "k"), keyed("next", "k")
	if err := s.Enqueue(ctx, time.Now(), first, next); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if got := claimAt(t, s, "a", now); !slices.Equal(entities(got), []string{"first"}) {
		t.Fatalf("claimed %v, want [first]", entities(got))
	}
	b, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback()
	var n int
	if err := b.QueryRow("SELECT COUNT(*) FROM `" + s.Config().Table + "`").Scan(&n); err != nil { // B's snapshot: first in flight
		t.Fatal(err)
	}
	if err := s.Settle(ctx, "a", now, []outbox.Outcome{{ID: first.ID, Result: outbox.Delivered}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ClaimInTx(ctx, b, outbox.ClaimParams{Owner: "b", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 10})
	if err != nil || len(got) != 0 {
		t.Fatalf("claim B = %v, %v; want nothing: its snapshot has first in flight", entities(got), err)
	}
	if got := claimAt(t, s, "a", now); len(got) != 0 {
		t.Fatalf("claim A took %v while B holds the row", entities(got))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := claimAt(t, s, "a", now); !slices.Equal(entities(got), []string{"next"}) {
		t.Fatalf("after B ended, claimed %v, want [next]", entities(got))
	}
}

// Several relays claim from a table that writers keep filling, some of their
// transactions committing late (so that seq order and commit order disagree). At no
// moment may two events of one key be in flight; every event is delivered once, and
// the events one writer wrote for a key (each committed before the next was written)
// in the order written.
//
// A relay stops at its first empty claim after the writers finish. An empty claim
// does not prove that nothing is due: when relay A settles the event of a key in
// flight and claims its successor, relay B's claim, which read the successor while the
// key was still in flight in its snapshot, may still hold its lock, and A passes over
// it (see TestClaimPassesOverADueEventAnotherClaimIsReading); both come back empty. A relay's
// next poll finds the event; here, one last claimer, alone, plays that poll. Alone it
// skips nothing, so what it cannot find is lost.
func TestOrderingKeysNeverTwoInFlightAcrossConcurrentClaimers(t *testing.T) {
	t.Parallel()
	for _, level := range []sql.IsolationLevel{sql.LevelReadCommitted, sql.LevelRepeatableRead} {
		t.Run(level.String(), func(t *testing.T) {
			db := openDB(t, 8, nil)
			s := newStore(t, db, mysql.Config{Isolation: level})
			ctx := context.Background()
			const (
				writers, perWriter = 3, 100
				claimers           = 4
				keys               = 8
			)
			type written struct{ writer, i int }
			var (
				mu        sync.Mutex
				inFlight  = map[string]string{} // key -> entity
				delivered = map[string]int{}
				lastOf    = map[[2]any]int{} // writer and key -> the last i delivered
				errs      = make(chan error, 100)
				writing   sync.WaitGroup
				origin    sync.Map // entity -> written

				enqueueDeadlocks atomic.Int64
			)
			for w := range writers {
				writing.Go(func() {
					for i := range perWriter {
						key := fmt.Sprintf("k%d", rand.IntN(keys))
						entity := fmt.Sprintf("w%d-%d", w, i)
						origin.Store(entity, written{w, i})
					again:
						err := s.Transact(ctx, func(tx *sql.Tx) error {
							if err := s.EnqueueTx(ctx, tx, keyed(entity, key)); err != nil {
								return err
							}
							if rand.IntN(4) == 0 {
								time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // commit late
							}
							return nil
						})
						var me *gomysql.MySQLError
						if level == sql.LevelRepeatableRead && errors.As(err, &me) && me.Number == 1213 {
							// At REPEATABLE READ a claim's locking reads take gap locks, and the
							// server may pick an enqueueing transaction to break a deadlock
							// with one: the application runs it again (see docs/mysql.md).
							enqueueDeadlocks.Add(1)
							goto again
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			writersDone := make(chan struct{})
			go func() { writing.Wait(); close(writersDone) }()

			// relay claims and delivers until its first empty claim once stop is closed.
			relay := func(owner string, stop <-chan struct{}) {
				for finished := false; ; {
					select {
					case <-stop:
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
					var outs []outbox.Outcome
					for _, e := range got {
						if other, busy := inFlight[e.OrderingKey]; busy {
							errs <- fmt.Errorf("%s claimed %s while %s of key %s is in flight", owner, e.EntityID, other, e.OrderingKey)
						}
						inFlight[e.OrderingKey] = e.EntityID
					}
					for _, e := range got {
						delete(inFlight, e.OrderingKey) // before Settle: the database still holds it until then
						delivered[e.EntityID]++
						v, _ := origin.Load(e.EntityID)
						w := v.(written)
						k := [2]any{w.writer, e.OrderingKey}
						if last, ok := lastOf[k]; ok && last > w.i {
							errs <- fmt.Errorf("%s delivered after w%d-%d of the same writer and key %s", e.EntityID, w.writer, last, e.OrderingKey)
						}
						lastOf[k] = w.i
						outs = append(outs, outbox.Outcome{ID: e.ID, Result: outbox.Delivered})
					}
					mu.Unlock()
					if err := s.Settle(ctx, owner, time.Now(), outs); err != nil {
						errs <- err
						return
					}
				}
			}
			var claiming sync.WaitGroup
			for c := range claimers {
				claiming.Go(func() { relay(fmt.Sprintf("relay-%d", c), writersDone) })
			}
			claiming.Wait()
			mu.Lock()
			byRelays := len(delivered)
			mu.Unlock()
			leftDue := count(t, db, s, "status = 'pending'")
			leftHeld := count(t, db, s, "status = 'processing'")
			relay("last", writersDone)
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("the relays delivered %d, leaving %d pending and %d in flight; the last claimer delivered %d",
				byRelays, leftDue, leftHeld, len(delivered)-byRelays)
			if len(delivered) != writers*perWriter {
				t.Fatalf("%d of %d events delivered", len(delivered), writers*perWriter)
			}
			for id, n := range delivered {
				if n != 1 {
					t.Errorf("%s delivered %d times", id, n)
				}
			}
			t.Logf("claims run again after a key conflict: %d; enqueues run again after a deadlock: %d", s.ClaimConflicts(), enqueueDeadlocks.Load())
			if left := count(t, db, s, "status <> 'completed'"); left != 0 {
				t.Fatalf("%d events not completed", left)
			}
		})
	}
}

// Eight relays drain one ordering key at READ COMMITTED, each stopping at its first
// empty claim; whatever they leave must be waiting, not lost: a lone claimer then
// delivers all of it, each event once, in order. The log says how often the relays
// stopped early (the race of TestClaimPassesOverADueEventAnotherClaimIsReading: on
// this machine about one run in seven).
func TestEmptyClaimsWhileEventsAreDueLoseNothing(t *testing.T) {
	t.Parallel()
	db := openDB(t, 10, nil)
	ctx := context.Background()
	const runs, events, relays = 10, 100, 8
	var early atomic.Int32
	// The runs are independent (a table each), so they run side by side; the pool is
	// shared, and a relay waits for a connection like any other caller.
	t.Run("runs", func(t *testing.T) {
		for run := range runs {
			t.Run(fmt.Sprint(run), func(t *testing.T) {
				t.Parallel()
				emptyClaimsRun(t, ctx, db, run, events, relays, &early)
			})
		}
	})
	t.Logf("in %d of %d runs the relays stopped at an empty claim while events were due", early.Load(), runs)
}

func emptyClaimsRun(t *testing.T, ctx context.Context, db *sql.DB, run, events, relays int, early *atomic.Int32) {
	s := newStore(t, db, mysql.Config{Isolation: sql.LevelReadCommitted})
	var evs []*outbox.Event
	for i := range events {
		evs = append(evs, keyed(fmt.Sprintf("e%03d", i), "k"))
	}
	if err := s.Enqueue(ctx, time.Now(), evs...); err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		delivered []string
		wg        sync.WaitGroup
	)
	drain := func(owner string) {
		for {
			now := time.Now()
			got, err := s.Claim(ctx, outbox.ClaimParams{Owner: owner, Now: now, LeaseUntil: now.Add(time.Hour), Limit: 1})
			if err != nil {
				t.Error(err)
				return
			}
			if len(got) == 0 {
				return
			}
			mu.Lock()
			delivered = append(delivered, entities(got)...)
			mu.Unlock()
			if err := s.Settle(ctx, owner, time.Now(), []outbox.Outcome{{ID: got[0].ID, Result: outbox.Delivered}}); err != nil {
				t.Error(err)
				return
			}
		}
	}
	for c := range relays {
		wg.Go(func() { drain(fmt.Sprintf("relay-%d", c)) })
	}
	wg.Wait()
	if len(delivered) < events {
		early.Add(1)
		if held := count(t, db, s, "status = 'processing'"); held != 0 {
			t.Fatalf("run %d: the relays stopped with %d events in flight", run, held)
		}
	}
	drain("last")
	var want []string
	for _, e := range evs {
		want = append(want, e.EntityID)
	}
	if !slices.Equal(delivered, want) {
		t.Fatalf("run %d: delivered %v, want each event once in order", run, delivered)
	}
}
