package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// Relays sharing the shards of a log (log_shard.go, log_relay.go): each shard delivered
// by one relay at a time, every relay taking work, every event delivered, each key in
// order; a shard taken over when its holder's session dies or freezes.

// newShardedRelayEnv is newLogRelayEnv on a log of the given shards.
func newShardedRelayEnv(t testing.TB, maxConns int32, shards int) logRelayEnv {
	t.Helper()
	pool := newPool(t, maxConns, "")
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	return logRelayEnv{pool: pool, log: newShardedLogIn(t, pool, schema, shards), store: s}
}

// otherProcess is env seen from another process: a pool of its own and a Log on it.
func (env logRelayEnv) otherProcess(t testing.TB, maxConns int32, app string) logRelayEnv {
	t.Helper()
	pool := newPool(t, maxConns, app)
	l, err := postgres.NewLog(context.Background(), pool, env.log.Config())
	if err != nil {
		t.Fatal(err)
	}
	return logRelayEnv{pool: pool, log: l, store: env.store}
}

// untilDeadline is how long a test may wait for an outcome that comes at once when the
// code works: most of what is left of go test's -timeout, and at most five minutes.
func untilDeadline(t testing.TB) time.Time {
	limit := time.Now().Add(5 * time.Minute)
	if tt, ok := t.(*testing.T); ok {
		if d, ok := tt.Deadline(); ok && d.Add(-15*time.Second).Before(limit) {
			return d.Add(-15 * time.Second)
		}
	}
	return limit
}

// shardWatch is a handler's instrument: which relay is delivering each shard, and
// whether two ever were at once.
type shardWatch struct {
	log *postgres.Log

	mu        sync.Mutex
	owner     map[int]int // shard → the relay delivering it now
	inFlight  map[int]int // shard → deliveries in flight
	overlaps  []string
	byRelay   map[int]int // relay → deliveries
	accepted  []string    // entities, in order of acceptance
	delivered map[string]int
}

func newShardWatch(l *postgres.Log) *shardWatch {
	return &shardWatch{log: l, owner: map[int]int{}, inFlight: map[int]int{}, byRelay: map[int]int{}, delivered: map[string]int{}}
}

func (w *shardWatch) shardOf(e outbox.Event) int {
	if e.OrderingKey != "" {
		return w.log.ShardOf(e.OrderingKey)
	}
	return w.log.ShardOf(e.EntityID)
}

// handler is relay me's handler: it records the delivery, holding the shard for a
// moment so that an overlap would show.
func (w *shardWatch) handler(me int) outbox.Handler {
	return outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		s := w.shardOf(e)
		w.mu.Lock()
		if w.inFlight[s] > 0 && w.owner[s] != me {
			w.overlaps = append(w.overlaps, fmt.Sprintf("relay %d delivered %s of shard %d while relay %d was delivering that shard", me, e.EntityID, s, w.owner[s]))
		}
		w.owner[s] = me
		w.inFlight[s]++
		w.mu.Unlock()
		time.Sleep(100 * time.Microsecond) // a delivery that takes a while: an overlap has room to happen
		w.mu.Lock()
		w.inFlight[s]--
		w.byRelay[me]++
		w.accepted = append(w.accepted, e.EntityID)
		w.delivered[e.EntityID]++
		w.mu.Unlock()
		return nil
	})
}

func (w *shardWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.delivered)
}

// TestLogRelaysShareShards: three relays, each with a pool of its own as three
// processes, share 8 shards while four writers append keyed transactions of 1-5 events
// (one in ten rolled back): every committed event is delivered, once (no crash, no
// fault), no rolled-back one; each key's events in order; no two relays ever deliver
// one shard at once; and every relay delivered some.
func TestLogRelaysShareShards(t *testing.T) {
	t.Parallel()
	env := newShardedRelayEnv(t, 6, 8)
	ctx := context.Background()
	watch := newShardWatch(env.log)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var run sync.WaitGroup
	for i := range 3 {
		other := env.otherProcess(t, 3, "")
		r := other.relay(t, watch.handler(i), postgres.LogRelayConfig{BatchSize: 20, MaxConcurrent: 4, Concurrency: 2})
		run.Go(func() {
			if err := r.Run(runCtx); !errors.Is(err, context.Canceled) {
				t.Errorf("relay %d: Run returned %v", i, err)
			}
		})
	}
	const writers, perWriter, keys = 4, 400, 10
	var (
		mu         sync.Mutex
		committed  []string
		rolledBack []string
		wg         sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), rand.Uint64()))
			next := make([]int, keys)
			for n := 0; n < perWriter; {
				size := 1 + rng.IntN(5)
				var events []*outbox.Event
				var names []string
				rollback := rng.IntN(10) == 0
				for range size {
					k := rng.IntN(keys)
					name := fmt.Sprintf("w%dk%d/%d", w, k, next[k])
					if rollback {
						name = fmt.Sprintf("rolled-back-w%dk%d-%d", w, k, n)
					} else {
						next[k]++
					}
					e := outbox.NewEvent("order.created", name, "user-1")
					e.OrderingKey = fmt.Sprintf("w%dk%d", w, k)
					events, names = append(events, e), append(names, name)
				}
				err := pgx.BeginFunc(ctx, env.pool, func(tx pgx.Tx) error {
					if err := env.log.AppendTx(ctx, tx, events...); err != nil {
						return err
					}
					if rollback {
						return errRollBack
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollBack) {
					t.Error(err)
					return
				}
				mu.Lock()
				if rollback {
					rolledBack = append(rolledBack, names...)
				} else {
					committed = append(committed, names...)
					n += size
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	deadline := untilDeadline(t)
	for watch.count() < len(committed) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	run.Wait()
	watch.mu.Lock()
	defer watch.mu.Unlock()
	for _, o := range watch.overlaps[:min(len(watch.overlaps), 10)] {
		t.Error(o)
	}
	if len(watch.overlaps) > 0 {
		t.Errorf("%d overlapping deliveries of a shard, want none", len(watch.overlaps))
	}
	for _, name := range committed {
		if n := watch.delivered[name]; n != 1 {
			t.Errorf("%s delivered %d times, want once", name, n)
		}
	}
	for _, name := range rolledBack {
		if watch.delivered[name] > 0 {
			t.Errorf("rolled-back %s delivered", name)
		}
	}
	if len(watch.delivered) != len(committed) {
		t.Errorf("%d distinct events delivered, want the %d committed", len(watch.delivered), len(committed))
	}
	checkKeyOrder(t, watch.accepted)
	for i := range 3 {
		if watch.byRelay[i] == 0 {
			t.Errorf("relay %d delivered nothing: the shards were not shared", i)
		}
	}
	t.Logf("%d events committed, %d rolled back; delivered by relay: %v", len(committed), len(rolledBack), watch.byRelay)
}

var errRollBack = errors.New("roll back")

// TestLogRelayShardTakeover: relay A delivers a batch of one shard and stops in its
// handler; B delivers the other shards, and finds A's Busy; when A's session is killed
// (pg_terminate_backend) or A freezes (its heartbeat off, so the server ends the
// session after LeaseDuration), B takes A's shard over and delivers its batch again;
// A's commit fails. Every event is delivered, each key in order.
func TestLogRelayShardTakeover(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"killed", "frozen"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			env := newShardedRelayEnv(t, 3, 4)
			ctx := context.Background()
			names := keyedNames(8, 3)
			appendKeyed(t, env.log, env.pool, names...)
			app := randomName("relay_a_")
			a := env.otherProcess(t, 2, app)
			inside, release := make(chan struct{}), make(chan struct{})
			var once, released sync.Once
			free := func() { released.Do(func() { close(release) }) }
			t.Cleanup(free)
			blockedShard := atomic.Int64{}
			recA := &logReceiver{fail: func(e outbox.Event, _ int) error {
				once.Do(func() {
					blockedShard.Store(int64(env.log.ShardOf(e.OrderingKey)))
					close(inside)
					<-release
				})
				return nil
			}}
			lease := 300 * time.Millisecond
			relayA := a.relay(t, recA, postgres.LogRelayConfig{LeaseDuration: lease})
			if how == "frozen" {
				postgres.SilenceLogRelay(relayA)
			}
			recB := &logReceiver{}
			b := env.relay(t, recB, postgres.LogRelayConfig{LeaseDuration: lease})
			done := inBackground(ctx, relayA.Step)
			<-inside
			held := int(blockedShard.Load())
			// Step, not Drain: Drain would wait for a's shard.
			for {
				st, err := b.Step(ctx)
				if err != nil {
					t.Fatalf("b while a delivers shard %d: %v", held, err)
				}
				if st.Read == 0 {
					if !st.Busy {
						t.Fatalf("b while a delivers shard %d: %+v; want the other shards drained, then Busy", held, st)
					}
					break
				}
			}
			for _, e := range recB.got {
				if env.log.ShardOf(e.OrderingKey) == held {
					t.Fatalf("b delivered %s of shard %d, which a holds", e.EntityID, held)
				}
			}
			switch how {
			case "killed":
				if _, err := env.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app); err != nil {
					t.Fatal(err)
				}
			case "frozen":
				time.Sleep(3 * lease)
			}
			var took postgres.LogRelayStep
			deadline := untilDeadline(t)
			for {
				st, err := b.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !st.Busy || time.Now().After(deadline) {
					took = st
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			free()
			res := <-done
			if took.Busy || took.Delivered == 0 {
				t.Fatalf("b after a's session ended: %+v; want a's shard taken over and delivered", took)
			}
			if res.err == nil {
				t.Fatalf("a committed after losing its session: %+v", res.st)
			}
			if st, err := b.Drain(ctx); err != nil || st.Busy {
				t.Fatalf("b draining the rest: %+v, %v", st, err)
			}
			got := recB.entities()
			if !sameSet(got, names) || len(got) != len(names) {
				t.Errorf("b delivered %v, want each of %v once", got, names)
			}
			checkKeyOrder(t, got)
		})
	}
}

// TestLogRelayDrainWaitsForAHeldShard: while another session holds one shard's lock
// (as a relay delivering it would), Drain delivers the other shards and then waits for
// that one instead of returning; once the lock is let go, it delivers the shard's
// events too, and returns without Busy. When ctx ends during the wait, Drain returns
// an error that says so, and Busy. On a log of one shard, and on four with one and two
// steps at once.
func TestLogRelayDrainWaitsForAHeldShard(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ shards, concurrency int }{{1, 1}, {4, 1}, {4, 2}} {
		for _, end := range []string{"released", "cancelled"} {
			t.Run(fmt.Sprintf("shards=%d/concurrency=%d/%s", c.shards, c.concurrency, end), func(t *testing.T) {
				t.Parallel()
				env := newShardedRelayEnv(t, 3, c.shards)
				ctx := context.Background()
				names := keyedNames(8, 3)
				appendKeyed(t, env.log, env.pool, names...)
				held := env.log.ShardOf("k0")
				var inHeld, others []string
				for _, name := range names {
					if env.log.ShardOf(name[:strings.Index(name, "/")]) == held {
						inHeld = append(inHeld, name)
					} else {
						others = append(others, name)
					}
				}
				cursor := "relay"
				if c.shards > 1 {
					cursor = fmt.Sprintf("relay/%d", held)
				}
				holder := beginTx(t, env.pool)
				cursors := pgx.Identifier{env.log.Config().Schema, env.log.Config().Table + "_cursors"}.Sanitize()
				if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))`, cursors, cursor); err != nil {
					t.Fatal(err)
				}

				app := randomName("drain_")
				rec := &logReceiver{}
				r := env.otherProcess(t, int32(c.concurrency+1), app).relay(t, rec, postgres.LogRelayConfig{Concurrency: c.concurrency})
				dctx, cancel := context.WithCancel(ctx)
				defer cancel()
				done := inBackground(dctx, r.Drain)
				// Until the relay's session waits for the held shard's lock.
				deadline := untilDeadline(t)
				for {
					select {
					case res := <-done:
						t.Fatalf("Drain returned while shard %d was held: %+v, %v; delivered %v, want it to wait for the shard",
							held, res.st, res.err, rec.entities())
					default:
					}
					var waiting bool
					if err := env.pool.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
						WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, app).Scan(&waiting); err != nil {
						t.Fatal(err)
					}
					if waiting {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the relay never waited for the held shard's lock")
					}
					time.Sleep(5 * time.Millisecond)
				}
				if got := rec.entities(); !sameSet(got, others) || len(got) != len(others) {
					t.Errorf("while shard %d was held, the relay delivered %v, want the other shards' %v", held, got, others)
				}

				switch end {
				case "released":
					commitTx(t, holder)
					res := <-done
					if res.err != nil || res.st.Busy || res.st.Delivered != len(names) {
						t.Fatalf("Drain after the shard was let go: %+v, %v; want all %d delivered, not Busy", res.st, res.err, len(names))
					}
					got := rec.entities()
					if !sameSet(got, names) || len(got) != len(names) {
						t.Errorf("delivered %v, want each of %v once", got, names)
					}
					checkKeyOrder(t, got)
				case "cancelled":
					cancel()
					res := <-done
					if !errors.Is(res.err, context.Canceled) || !res.st.Busy {
						t.Fatalf("Drain cancelled while it waited: %+v, %v; want Busy and context.Canceled", res.st, res.err)
					}
					if !strings.Contains(res.err.Error(), "another relay holds") {
						t.Errorf("Drain's error %q does not say that another relay holds a shard", res.err)
					}
					for _, e := range rec.entities() {
						if slices.Contains(inHeld, e) {
							t.Errorf("delivered %s of the held shard %d", e, held)
						}
					}
				}
			})
		}
	}
}

// TestLogRelayDrainFindsEventsInShardsItFoundEmpty: after its first pass, Drain steps
// only the shards that had something; an event committed meanwhile to a shard that the
// first pass found empty is still delivered before Drain returns (its look in every
// shard finds it), as it was when every pass stepped every shard.
func TestLogRelayDrainFindsEventsInShardsItFoundEmpty(t *testing.T) {
	t.Parallel()
	env := newShardedRelayEnv(t, 4, 4)
	ctx := context.Background()
	keysIn := func(shard, n int) []string {
		var keys []string
		for i := 0; len(keys) < n; i++ {
			if key := fmt.Sprintf("k%d", i); env.log.ShardOf(key) == shard {
				keys = append(keys, key)
			}
		}
		return keys
	}
	var busy []string // four events of shard 0, two batches
	for _, key := range keysIn(0, 4) {
		busy = append(busy, key+"/0")
	}
	late := keysIn(1, 1)[0] + "/0" // appended while the second batch is delivered
	appendKeyed(t, env.log, env.pool, busy...)
	var once sync.Once
	rec := &logReceiver{fail: func(e outbox.Event, _ int) error {
		if e.EntityID == busy[2] || e.EntityID == busy[3] {
			once.Do(func() { appendKeyed(t, env.log, env.pool, late) })
		}
		return nil
	}}
	r := env.relay(t, rec, postgres.LogRelayConfig{BatchSize: 2})
	st, err := r.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(busy), late)
	if got := rec.entities(); !sameSet(got, want) || len(got) != len(want) || st.Delivered != len(want) {
		t.Fatalf("Drain delivered %v (%+v), want each of %v once", got, st, want)
	}
}

// TestLogKeyLockOrdersOverlappingWriters: the order promised within a pair, for one key.
// Without the rule, a writer that took its transaction ID (by a first write) before it
// waited for another writer of the key comes first, although it wrote after seeing the
// other's commit. With the rule (LockKeyTx before the transaction's first write), the
// waiting writer has no ID until the other commits, and comes after it. LockKeyTx after
// a write is refused with ErrLogKeyLockLate.
func TestLogKeyLockOrdersOverlappingWriters(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 4, "")
	ctx := context.Background()
	l := newShardedLog(t, pool, 4)
	business := pgx.Identifier{l.Config().Schema, "business_rows"}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+business+` (id bigserial PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	appendKey := func(tx pgx.Tx, name string) {
		t.Helper()
		e := outbox.NewEvent("order.updated", name, "user-1")
		e.OrderingKey = "order-7"
		if err := l.AppendTx(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
	}
	write := func(tx pgx.Tx, note string) {
		t.Helper()
		if _, err := tx.Exec(ctx, `INSERT INTO `+business+` (note) VALUES ($1)`, note); err != nil {
			t.Fatal(err)
		}
	}
	c := logShardCursor(t, l, "reader", l.ShardOf("order-7"))
	for _, rule := range []bool{false, true} {
		first, second := fmt.Sprintf("first-%t", rule), fmt.Sprintf("second-%t", rule)
		t1, t2 := beginTx(t, pool), beginTx(t, pool)
		var pid2 int
		if err := t2.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid2); err != nil {
			t.Fatal(err)
		}
		if err := l.LockKeyTx(ctx, t1, "order-7"); err != nil {
			t.Fatal(err)
		}
		if !rule {
			write(t2, "t2 writes before it waits for the key") // t2 takes its ID now
		}
		locked := make(chan error, 1)
		go func() {
			if rule {
				locked <- l.LockKeyTx(ctx, t2, "order-7")
				return
			}
			_, err := t2.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))`,
				pgx.Identifier{l.Config().Schema, l.Config().Table}.Sanitize(), "order-7")
			locked <- err
		}()
		waitForLockWait(t, pool, pid2)
		write(t1, "t1 changes the order")
		appendKey(t1, first)
		commitTx(t, t1)
		if err := <-locked; err != nil {
			t.Fatal(err)
		}
		write(t2, "t2 changes the order after seeing t1's change")
		appendKey(t2, second)
		commitTx(t, t2)
		got := logEntities(drainLog(t, c, 10))
		want := []string{first, second}
		if !rule {
			want = []string{second, first} // the caveat: by first write, not by commit
		}
		if !slices.Equal(got, want) {
			t.Errorf("rule %t: read %v, want %v", rule, got, want)
		}
	}
	late := beginTx(t, pool)
	write(late, "a write first")
	if err := l.LockKeyTx(ctx, late, "order-7"); !errors.Is(err, postgres.ErrLogKeyLockLate) {
		t.Errorf("LockKeyTx after a write: %v, want ErrLogKeyLockLate", err)
	}
}

// waitForLockWait waits until the session pid waits for a lock.
func waitForLockWait(t testing.TB, pool *pgxpool.Pool, pid int) {
	t.Helper()
	deadline := untilDeadline(t)
	for {
		var waiting bool
		if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d never waited for the key's lock", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// keyedNames names per events of each of keys keys, "k<key>/<n>", in key order.
func keyedNames(keys, per int) []string {
	var names []string
	for k := range keys {
		for n := range per {
			names = append(names, fmt.Sprintf("k%d/%d", k, n))
		}
	}
	return names
}
