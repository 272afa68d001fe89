package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// The SQLite log relay's tests (issue 24): delivery from the log, failures that move
// to the events table with their key's later events, holds on destination faults, one
// relay at a time per cursor (also from two pools on one file), at least once across
// crashes, and wake-ups. Each test has a database file of its own.

// relayEnv is a database file holding both the log and the table layout's events.
type relayEnv struct {
	path  string
	db    *sql.DB
	log   *sqlite.Log
	store *sqlite.Store
}

func newRelayEnv(t testing.TB) relayEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.db")
	env := openRelayEnv(t, path)
	env.path = path
	return env
}

// openRelayEnv opens path (again, as a second pool or process would), migrating it.
func openRelayEnv(t testing.TB, path string) relayEnv {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return relayEnv{path: path, db: db, log: migratedLog(t, db), store: s}
}

func (env relayEnv) relay(t testing.TB, h outbox.Handler, cfg sqlite.LogRelayConfig) *sqlite.LogRelay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	r, err := sqlite.NewLogRelay(context.Background(), env.log, env.store, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// keyedEvents makes one event per "key/n" name: ordering key key, entity the name,
// payload and metadata naming it. A name without a slash has no key.
func keyedEvents(names ...string) []*outbox.Event {
	events := make([]*outbox.Event, len(names))
	for i, name := range names {
		e := outbox.NewEvent("order.created", name, "user-"+strconv.Itoa(i%3))
		if key, _, ok := strings.Cut(name, "/"); ok {
			e.OrderingKey = key
		}
		e.Payload = []byte(fmt.Sprintf(`{"name": %q}`, name))
		e.Metadata = map[string]string{"source": "test"}
		events[i] = e
	}
	return events
}

// appendNames appends one committed transaction of keyedEvents(names).
func (env relayEnv) appendNames(t testing.TB, names ...string) []*outbox.Event {
	t.Helper()
	events := keyedEvents(names...)
	if err := env.log.Transact(context.Background(), func(tx *sql.Tx) error {
		return env.log.AppendTx(context.Background(), tx, events...)
	}); err != nil {
		t.Fatal(err)
	}
	return events
}

// receiver records the entities it accepted, in order, and fails as fail says (nil:
// accept). It serves as a Handler, and as a BatchHandler through batches().
type receiver struct {
	mu       sync.Mutex
	fail     func(e outbox.Event) error
	accepted []string
	attempts map[string]int
	calls    [][]string // HandleBatch calls, by entity
}

func (r *receiver) Handle(_ context.Context, e outbox.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == nil {
		r.attempts = map[string]int{}
	}
	r.attempts[e.EntityID]++
	if r.fail != nil {
		if err := r.fail(e); err != nil {
			return err
		}
	}
	r.accepted = append(r.accepted, e.EntityID)
	return nil
}

func (r *receiver) setFail(f func(outbox.Event) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = f
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accepted)
}

type batchReceiver struct{ *receiver }

func (b batchReceiver) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	ids := make([]string, len(events))
	errs := make([]error, len(events))
	for i, e := range events {
		ids[i] = e.EntityID
		errs[i] = b.Handle(ctx, e)
	}
	b.mu.Lock()
	b.calls = append(b.calls, ids)
	b.mu.Unlock()
	return errs
}

// checkKeyOrder fails t unless each key's first acceptances come in the order of
// their "key/n" names' n, and every expected name was accepted.
func checkKeyOrder(t *testing.T, accepted []string, want []*outbox.Event) {
	t.Helper()
	first := map[string]bool{}
	last := map[string]int{}
	for _, name := range accepted {
		if first[name] {
			continue
		}
		first[name] = true
		key, n, ok := strings.Cut(name, "/")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("bad name %q", name)
		}
		if prev, seen := last[key]; seen && prev > i {
			t.Fatalf("key %s: %s delivered after %s/%d", key, name, key, prev)
		}
		last[key] = i
	}
	for _, e := range want {
		if !first[e.EntityID] {
			t.Fatalf("%s never delivered", e.EntityID)
		}
	}
}

type cursorRow struct {
	after, updated int64
	owner          sql.NullString
	until          sql.NullInt64
}

func readCursorRow(t testing.TB, db *sql.DB, name string) cursorRow {
	t.Helper()
	var c cursorRow
	if err := db.QueryRow(`SELECT after_seq, updated_at, lease_owner, lease_until FROM outbox_log_cursors WHERE name = ?`, name).
		Scan(&c.after, &c.updated, &c.owner, &c.until); err != nil {
		t.Fatal(err)
	}
	return c
}

func countTable(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM outbox_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLogRelayDeliveredEventsStayOutOfTheTable: 1,000 events (7 keys, and some
// without) in batches of 97, through a Handler and a BatchHandler: each delivered
// once, each key in order, no HandleBatch call with two events of one key, nothing in
// the events table; idle steps afterwards write nothing.
func TestLogRelayDeliveredEventsStayOutOfTheTable(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			env := newRelayEnv(t)
			var names []string
			for i := range 1000 {
				if i%8 == 7 {
					names = append(names, fmt.Sprintf("solo-%04d", i))
				} else {
					names = append(names, fmt.Sprintf("k%d/%04d", i%7, i))
				}
			}
			var all []*outbox.Event
			for i := 0; i < len(names); i += 10 {
				all = append(all, env.appendNames(t, names[i:i+10]...)...)
			}
			rec := &receiver{}
			var h outbox.Handler = rec
			if batch {
				h = batchReceiver{rec}
			}
			r := env.relay(t, h, sqlite.LogRelayConfig{BatchSize: 97, MaxConcurrent: 4})
			st, err := r.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Read != 1000 || st.Delivered != 1000 || st.Failed != 0 || st.Waiting != 0 || st.Held || st.Busy {
				t.Fatalf("drain: %+v", st)
			}
			got := rec.got()
			if len(got) != 1000 {
				t.Fatalf("%d deliveries, want 1000", len(got))
			}
			checkKeyOrder(t, got, all)
			for _, call := range rec.calls {
				keys := map[string]bool{}
				for _, name := range call {
					if k, _, ok := strings.Cut(name, "/"); ok {
						if keys[k] {
							t.Fatalf("one HandleBatch call carried two events of key %s: %v", k, call)
						}
						keys[k] = true
					}
				}
			}
			if batch && len(rec.calls) == 0 {
				t.Fatal("the BatchHandler was never called as one")
			}
			if n := countTable(t, env.db); n != 0 {
				t.Fatalf("%d events in the events table, want none", n)
			}
			before := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor)
			for range 3 {
				if st, err := r.Step(ctx); err != nil || st.Read != 0 {
					t.Fatalf("idle step: %+v, %v", st, err)
				}
			}
			if after := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); after != before {
				t.Fatalf("idle steps wrote the cursor's row: %+v -> %+v", before, after)
			}
		})
	}
}

// TestLogRelayFailureMovesWithItsKey: a retryable failure moves with its fields,
// attempt 1, last_error, history and next_attempt_at from the policy, and its key's
// later event follows as pending; a Permanent failure is given up and its successor is
// blocked; a later batch sends the failing keys' new events to the table and delivers
// the others; once the receiver recovers, the Processor delivers the table's events in
// key order, an operator's retry brings back the given-up one, and new events of
// those keys come from the log again.
func TestLogRelayFailureMovesWithItsKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	clock := outboxtest.NewClock(t0)
	retry := outbox.RetryPolicy{Delays: []time.Duration{time.Minute}, Jitter: -1}
	rec := &receiver{fail: func(e outbox.Event) error {
		switch e.EntityID {
		case "a/1":
			return errors.New("500 try later")
		case "c/1":
			return outbox.Permanent(errors.New("422 bad payload"))
		}
		return nil
	}}
	r := env.relay(t, rec, sqlite.LogRelayConfig{Clock: clock, Retry: retry})
	first := env.appendNames(t, "a/1", "a/2", "b/1", "c/1", "c/2")
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 5 || st.Delivered != 1 || st.Failed != 2 || st.Waiting != 2 {
		t.Fatalf("step: %+v", st)
	}
	a1, err := env.store.Get(ctx, first[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	want := first[0]
	if a1.Status != outbox.StatusFailed || a1.Attempts != 1 || a1.LastError != "500 try later" ||
		!a1.NextAttemptAt.Equal(t0.Add(time.Minute)) || !a1.LastAttemptAt.Equal(t0) ||
		len(a1.Errors) != 1 || a1.Errors[0].Attempt != 1 || a1.Errors[0].Error != "500 try later" || !a1.Errors[0].At.Equal(t0) {
		t.Fatalf("a/1 in the table: %+v", a1)
	}
	if a1.Type != want.Type || a1.EntityID != want.EntityID || a1.UserID != want.UserID || a1.OrderingKey != "a" ||
		string(a1.Payload) != string(want.Payload) || a1.Metadata["source"] != "test" || !a1.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("a/1's fields: %+v, appended %+v", a1, want)
	}
	a2, err := env.store.Get(ctx, first[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if a2.Status != outbox.StatusPending || a2.Attempts != 0 || a2.LastError != "" {
		t.Fatalf("a/2 in the table: %+v", a2)
	}
	c1, err := env.store.Get(ctx, first[3].ID)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Status != outbox.StatusFailed || !c1.NextAttemptAt.IsZero() || !strings.Contains(c1.LastError, "422 bad payload") {
		t.Fatalf("c/1 should be given up: %+v", c1)
	}
	blocked, err := env.store.List(ctx, outbox.Filter{Blocked: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(blocked) != 1 || blocked[0].EntityID != "c/2" {
		t.Fatalf("blocked: %v, want c/2", entities(blocked))
	}
	if _, err := env.store.Get(ctx, first[2].ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("b/1 was delivered and should not be in the table: %v", err)
	}

	env.appendNames(t, "a/3", "b/2", "c/3", "d/1")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Waiting != 2 || st.Failed != 0 {
		t.Fatalf("second step: %+v, %v", st, err)
	}
	// Keys are delivered concurrently: b/2 and d/1 in either order.
	if got := rec.got(); len(got) != 3 || got[0] != "b/1" || !slices.Equal(slices.Sorted(slices.Values(got[1:])), []string{"b/2", "d/1"}) {
		t.Fatalf("delivered from the log: %v", got)
	}

	// The receiver recovers; the Processor takes over the table.
	rec.setFail(nil)
	clock.Advance(2 * time.Minute)
	p, err := outbox.NewProcessor(env.store, rec, outbox.Config{Clock: clock, Retry: retry, MaxConcurrent: 1, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := env.store.Retry(ctx, clock.Now(), outbox.Filter{IDs: []string{first[3].ID}}); err != nil || n != 1 {
		t.Fatalf("retry c/1: %d, %v", n, err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := rec.got()
	if !slices.Equal(got[3:], []string{"a/1", "a/2", "a/3", "c/1", "c/2", "c/3"}) {
		t.Fatalf("the Processor delivered %v, want a/1, a/2, a/3, then c/1, c/2, c/3", got[3:])
	}
	// The keys are finished in the table: their new events come from the log.
	tableBefore := countTable(t, env.db)
	env.appendNames(t, "a/4", "c/4")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Waiting != 0 {
		t.Fatalf("after recovery: %+v, %v", st, err)
	}
	if n := countTable(t, env.db); n != tableBefore {
		t.Fatalf("the table grew from %d to %d events", tableBefore, n)
	}
}

// TestLogRelayDestinationFaultHolds: an unreachable destination holds the batch:
// nothing moved, no attempt spent, the cursor stays; the relay probes one event at a
// time with its wait doubling to MaxCooldown; after recovery everything is delivered
// in order and nothing is in the table.
func TestLogRelayDestinationFaultHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	events := env.appendNames(t, "a/1", "b/1", "a/2", "b/2", "c/1", "a/3", "c/2", "d/1", "b/3", "a/4")
	rec := &receiver{fail: func(e outbox.Event) error {
		if e.EntityID == "a/2" || e.EntityID == "c/1" {
			return outbox.Unavailable(errors.New("connection refused"))
		}
		return nil
	}}
	r := env.relay(t, rec, sqlite.LogRelayConfig{MaxConcurrent: 1,
		Breaker: outbox.BreakerConfig{Cooldown: time.Second, MaxCooldown: 4 * time.Second}})
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Read != 10 || st.RetryIn != time.Second || !outbox.IsUnavailable(st.Fault) {
		t.Fatalf("first step: %+v", st)
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != 0 {
		t.Fatalf("cursor moved to %d on a held batch", c.after)
	}
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events moved on a held batch", n)
	}
	rec.setFail(func(outbox.Event) error { return outbox.Unavailable(errors.New("connection refused")) })
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		st, err := r.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Held || st.Read != 1 || st.RetryIn != want {
			t.Fatalf("probe: %+v, want a held probe of 1 waiting %s", st, want)
		}
	}
	rec.setFail(nil)
	if st, err := r.Step(ctx); err != nil || st.Read != 1 || st.Delivered != 1 || st.Held {
		t.Fatalf("probe after recovery: %+v, %v", st, err)
	}
	if st, err := r.Drain(ctx); err != nil || st.Read != 9 || st.Delivered != 9 {
		t.Fatalf("drain after recovery: %+v, %v", st, err)
	}
	checkKeyOrder(t, rec.got(), events)
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events in the table after a hold, want none", n)
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != events[9].Seq {
		t.Fatalf("cursor at %d, want %d", c.after, events[9].Seq)
	}
}

// TestLogRelayTakeover: while relay A delivers, B (another pool on the file) finds the
// cursor Busy; once A's lease has run out (the shared clock moved past it), B takes
// the cursor and delivers the batch again, and A's commit is refused with
// ErrLogLeaseLost and moves nothing. A released lease is taken at once.
func TestLogRelayTakeover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	other := openRelayEnv(t, env.path)
	clock := outboxtest.NewClock(time.Now())
	const lease = time.Hour // renewals every 20 minutes: none during the test
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stuck := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		once.Do(func() { close(started) })
		<-release
		return errors.New("A's late failure") // would move the event, if A could commit
	})
	a := env.relay(t, stuck, sqlite.LogRelayConfig{Clock: clock, LeaseDuration: lease, MaxConcurrent: 1, Owner: "A"})
	recB := &receiver{}
	b := other.relay(t, recB, sqlite.LogRelayConfig{Clock: clock, LeaseDuration: lease, Owner: "B"})
	events := env.appendNames(t, "k/1", "k/2", "k/3")

	type result struct {
		st  sqlite.LogRelayStep
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := a.Step(ctx)
		done <- result{st, err}
	}()
	<-started
	if st, err := b.Step(ctx); err != nil || !st.Busy {
		t.Fatalf("B while A holds a fresh lease: %+v, %v; want Busy", st, err)
	}
	clock.Advance(lease + time.Second)
	if st, err := b.Step(ctx); err != nil || st.Busy || st.Delivered != 3 {
		t.Fatalf("B after A's lease ran out: %+v, %v", st, err)
	}
	close(release)
	res := <-done
	if !errors.Is(res.err, sqlite.ErrLogLeaseLost) {
		t.Fatalf("A's step: %+v, %v; want ErrLogLeaseLost", res.st, res.err)
	}
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("A's refused commit moved %d events", n)
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != events[2].Seq || c.owner.String != "B" {
		t.Fatalf("cursor: %+v, want B's, past the batch", c)
	}
	checkKeyOrder(t, recB.got(), events)

	// B releases; A takes the cursor at once, without waiting out B's lease.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	recA := &receiver{}
	a2 := env.relay(t, recA, sqlite.LogRelayConfig{Clock: clock, LeaseDuration: lease, Owner: "A2"})
	env.appendNames(t, "k/4")
	if st, err := a2.Step(ctx); err != nil || st.Busy || st.Delivered != 1 {
		t.Fatalf("after B released: %+v, %v", st, err)
	}
	if st, err := b.Step(ctx); err != nil || !st.Busy {
		t.Fatalf("B while A2 holds the lease: %+v, %v; want Busy", st, err)
	}
	// Busy, B reloaded the stored position: it has nothing to read, and tries no lease.
	if st, err := b.Step(ctx); err != nil || st.Read != 0 || st.Busy {
		t.Fatalf("B after A2 moved the cursor: %+v, %v; want an empty read", st, err)
	}
}

// writeLockHolder is a connection of another pool that takes the database's write
// lock (BEGIN IMMEDIATE) when told, and holds it until released, as an application
// writer in the middle of its transaction does.
type writeLockHolder struct {
	t    testing.TB
	conn *sql.Conn
}

func newWriteLockHolder(t testing.TB, path string) *writeLockHolder {
	t.Helper()
	conn, err := openRelayEnv(t, path).db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &writeLockHolder{t: t, conn: conn}
}

func (h *writeLockHolder) take() {
	if _, err := h.conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		h.t.Error(err)
	}
}

func (h *writeLockHolder) release() {
	if _, err := h.conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
		h.t.Error(err)
	}
}

// busyTimeout reads the busy_timeout of db's one connection.
func busyTimeout(t testing.TB, db *sql.DB) int {
	t.Helper()
	var ms int
	if err := db.QueryRow(`PRAGMA busy_timeout`).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestLogRelayAckGivesUpWhenTheLeaseEnds: another connection takes the write lock while
// the relay delivers a batch and keeps it; the relay's Ack tries for it until the
// lease ends (the clock moved past it after the first refusal) and then gives up with
// ErrLogAckLockTimeout, without a commit: the cursor row is as the lease's take left
// it. Once the lock is released, the next step delivers the batch again and moves the
// cursor; nothing is lost. The relay's connection went back to the pool with its
// busy_timeout.
func TestLogRelayAckGivesUpWhenTheLeaseEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	env.db.SetMaxOpenConns(1) // the relay's connection is the pool's only one
	clock := outboxtest.NewClock(time.Now())
	const lease = time.Minute // renewals every 20 s: none during the test
	holder := newWriteLockHolder(t, env.path)
	var (
		once   sync.Once
		before cursorRow // as the lease's take left it
	)
	rec := &receiver{fail: func(outbox.Event) error {
		once.Do(func() {
			before = readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor)
			holder.take() // the application begins its transaction meanwhile
		})
		return nil
	}}
	r := env.relay(t, rec, sqlite.LogRelayConfig{Clock: clock, LeaseDuration: lease, MaxConcurrent: 1, Owner: "A"})
	var busy atomic.Int32
	r.OnAckBusy(func() {
		if busy.Add(1) == 1 {
			clock.Advance(lease) // the lease ends while the relay waits
		}
	})
	events := env.appendNames(t, "k/1", "k/2", "k/3")

	st, err := r.Step(ctx)
	if !errors.Is(err, sqlite.ErrLogAckLockTimeout) {
		t.Fatalf("step under a held write lock: %+v, %v; want ErrLogAckLockTimeout", st, err)
	}
	if busy.Load() == 0 {
		t.Fatal("the relay never found the lock taken")
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c != before {
		t.Fatalf("cursor row after giving up: %+v, want it as before the Ack, %+v", c, before)
	}
	if ms := busyTimeout(t, env.db); ms != int(sqlite.DefaultBusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout of the pool's connection: %d ms after the relay's Ack", ms)
	}

	holder.release()
	if st, err := r.Step(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("after the lock was released: %+v, %v; want the batch delivered again", st, err)
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != events[2].Seq || c.owner.String != "A" {
		t.Fatalf("cursor: %+v, want A's, past the batch", c)
	}
	if got, want := rec.got(), []string{"k/1", "k/2", "k/3", "k/1", "k/2", "k/3"}; !slices.Equal(got, want) {
		t.Fatalf("accepted %v, want the batch twice, in order", got)
	}
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events moved to the events table", n)
	}
}

// TestLogRelayAckWaitsForTheLock: the write lock, taken by another connection while
// the relay delivers, is released after the Ack's first refused try, well within the
// lease: the Ack takes it and commits.
func TestLogRelayAckWaitsForTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	env.db.SetMaxOpenConns(1)
	holder := newWriteLockHolder(t, env.path)
	var once sync.Once
	rec := &receiver{fail: func(outbox.Event) error {
		once.Do(holder.take)
		return nil
	}}
	r := env.relay(t, rec, sqlite.LogRelayConfig{MaxConcurrent: 1})
	var busy atomic.Int32
	r.OnAckBusy(func() {
		if busy.Add(1) == 1 {
			holder.release()
		}
	})
	events := env.appendNames(t, "k/1", "k/2", "k/3")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("step: %+v, %v", st, err)
	}
	if busy.Load() == 0 {
		t.Fatal("the relay never found the lock taken")
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != events[2].Seq {
		t.Fatalf("cursor at %d, want past the batch (%d)", c.after, events[2].Seq)
	}
	if got := rec.got(); !slices.Equal(got, []string{"k/1", "k/2", "k/3"}) {
		t.Fatalf("accepted %v, want each once", got)
	}
	if ms := busyTimeout(t, env.db); ms != int(sqlite.DefaultBusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout of the pool's connection: %d ms after the relay's Ack", ms)
	}
}

// TestLogRelayCrashRedeliversTheBatch: a step cancelled while it delivers the 6th of
// 10 events moves nothing and leaves the cursor; a relay on another pool delivers all
// 10 again once the first one's lease has run out.
func TestLogRelayCrashRedeliversTheBatch(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	clock := outboxtest.NewClock(time.Now())
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("k%d/%d", i%3, i))
	}
	events := env.appendNames(t, names...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	h := outbox.HandlerFunc(func(hctx context.Context, e outbox.Event) error {
		if calls.Add(1) == 6 {
			cancel() // the process dies here, as far as the database can tell
			<-hctx.Done()
			return hctx.Err()
		}
		return nil
	})
	r := env.relay(t, h, sqlite.LogRelayConfig{Clock: clock, MaxConcurrent: 1})
	if _, err := r.Step(ctx); err == nil {
		t.Fatal("a cancelled step reported success")
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != 0 {
		t.Fatalf("cursor moved to %d", c.after)
	}
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events moved by a cancelled step", n)
	}
	other := openRelayEnv(t, env.path)
	rec := &receiver{}
	next := other.relay(t, rec, sqlite.LogRelayConfig{Clock: clock})
	if st, err := next.Step(context.Background()); err != nil || !st.Busy {
		t.Fatalf("before the lease ran out: %+v, %v; want Busy", st, err)
	}
	clock.Advance(outbox.DefaultLeaseDuration + time.Second)
	if st, err := next.Drain(context.Background()); err != nil || st.Delivered != 10 {
		t.Fatalf("after: %+v, %v; want all 10 delivered again", st, err)
	}
	checkKeyOrder(t, rec.got(), events)
}

// TestLogRelayOneRelayPerCursor: two relays on one file, each on its own pool, run
// while 1,000 events are appended from both pools: their deliveries never overlap;
// the first delivers until it stops (and releases the lease), the second from then on;
// every event is delivered, each key in order.
func TestLogRelayOneRelayPerCursor(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	other := openRelayEnv(t, env.path)
	total := 1000
	if raceEnabled {
		total = 400
	}
	var (
		inFlight atomic.Int32
		overlaps atomic.Int32
		mu       sync.Mutex
		accepted []string
		by       = map[string]int{}
		progress = make(chan struct{}, 1)
		first    = map[string]string{} // entity -> the relay that delivered it first
	)
	handler := func(name string) outbox.Handler {
		return outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			if inFlight.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inFlight.Add(-1)
			mu.Lock()
			accepted = append(accepted, e.EntityID)
			by[name]++
			if first[e.EntityID] == "" {
				first[e.EntityID] = name
			}
			mu.Unlock()
			select {
			case progress <- struct{}{}:
			default:
			}
			return nil
		})
	}
	cfg := sqlite.LogRelayConfig{BatchSize: 50, MaxConcurrent: 1, PollInterval: 5 * time.Millisecond}
	ra := env.relay(t, handler("A"), cfg)
	rb := other.relay(t, handler("B"), cfg)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopA()
	defer stopB()
	deadline := time.Now().Add(time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-5 * time.Second)
	}
	timeout := time.After(time.Until(deadline))
	// waitFor waits until done says so, at each delivery.
	waitFor := func(what string, done func() bool) {
		t.Helper()
		for {
			mu.Lock()
			ok := done()
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-progress:
			case <-timeout:
				t.Fatalf("deadline passed waiting for %s", what)
			}
		}
	}
	var runs sync.WaitGroup
	runs.Go(func() { _ = ra.Run(ctxA) })
	startedB := false

	var all []*outbox.Event
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < total; {
		n := min(1+rnd.IntN(5), total-i)
		var names []string
		for j := range n {
			names = append(names, fmt.Sprintf("k%d/%05d", rnd.IntN(20), i+j))
		}
		events := keyedEvents(names...)
		db, l := env.db, env.log
		if rnd.IntN(2) == 0 {
			db, l = other.db, other.log
		}
		if err := func() error {
			tx, err := db.Begin()
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := l.AppendTx(context.Background(), tx, events...); err != nil {
				return err
			}
			return tx.Commit()
		}(); err != nil {
			t.Fatal(err)
		}
		all = append(all, events...)
		i += n
		if i >= total/4 && !startedB {
			// B starts once A holds the cursor and has committed a batch (its second
			// batch's deliveries say so), and finds it Busy while A runs. The wait also
			// lets A's commit in: this loop's back-to-back appends can keep SQLite's
			// write lock from it for as long as they last.
			waitFor("A's second batch", func() bool { return by["A"] > cfg.BatchSize })
			runs.Go(func() { _ = rb.Run(ctxB) })
			startedB = true
		}
		if i >= total/2 && ctxA.Err() == nil {
			stopA() // A stops and releases: B takes over
		}
	}
	waitFor("every event", func() bool {
		seen := map[string]bool{}
		for _, name := range accepted {
			seen[name] = true
		}
		return len(seen) >= total
	})
	stopB()
	runs.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Fatalf("the two relays' deliveries overlapped %d times", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if by["A"] == 0 || by["B"] == 0 {
		t.Fatalf("deliveries by relay: %v; want both to have delivered", by)
	}
	checkKeyOrder(t, accepted, all)
	// A stopped in the middle of a step (it may have been waiting for the write lock
	// to commit): B delivers that batch again, at least once. Nothing else twice.
	seen := map[string]int{}
	for _, name := range accepted {
		seen[name]++
	}
	twice := 0
	for name, n := range seen {
		if n > 1 {
			twice++
			if n > 2 || first[name] != "A" {
				t.Errorf("%s delivered %d times, first by %s", name, n, first[name])
			}
		}
	}
	if twice > cfg.BatchSize {
		t.Fatalf("%d events delivered twice: more than A's last batch", twice)
	}
	t.Logf("deliveries by relay: %v; delivered again after A stopped: %d", by, twice)
}

// TestLogRelayEndToEnd: writers append keyed transactions through Log.Transact while a
// relay runs on the log and a Processor on the events table, into a receiver that
// fails 3 % of attempts at random: every event is delivered, and each key's first
// deliveries come in append order across the log and the table.
func TestLogRelayEndToEnd(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	total := 3000
	if raceEnabled {
		total = 600
	}
	var (
		mu        sync.Mutex
		rnd       = rand.New(rand.NewPCG(3, 4))
		accepted  []string
		delivered = map[string]bool{}
		failures  int
		progress  = make(chan struct{}, 1)
	)
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if rnd.IntN(100) < 3 {
			failures++
			return errors.New("503 random refusal")
		}
		accepted = append(accepted, e.EntityID)
		delivered[e.EntityID] = true
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	})
	retry := outbox.RetryPolicy{Delays: []time.Duration{time.Millisecond}, MaxAttempts: 100, Jitter: -1}
	r := env.relay(t, h, sqlite.LogRelayConfig{BatchSize: 100, Retry: retry})
	p, err := outbox.NewProcessor(env.store, h, outbox.Config{Retry: retry, PollInterval: 50 * time.Millisecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs sync.WaitGroup
	runs.Go(func() { _ = r.Run(ctx) })
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}

	var all []*outbox.Event
	var allMu sync.Mutex
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Go(func() {
			wr := rand.New(rand.NewPCG(uint64(w), 9))
			for i := w; i < total; {
				n := 1 + wr.IntN(5)
				var names []string
				for j := 0; j < n && i < total; j++ {
					names = append(names, fmt.Sprintf("k%d/%05d", wr.IntN(200), i))
					i += 4
				}
				events := keyedEvents(names...)
				if err := env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, events...) }); err != nil {
					t.Error(err)
					return
				}
				allMu.Lock()
				all = append(all, events...)
				allMu.Unlock()
			}
		})
	}
	writers.Wait()
	// Names are numbered by writer, not by commit: order per key is checked against
	// the log's order (the events' Seq), below.
	deadline := time.Now().Add(2 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-5 * time.Second)
	}
	timeout := time.After(time.Until(deadline))
	for {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n >= len(all) {
			break
		}
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("%d of %d delivered before the deadline", n, len(all))
		}
	}
	cancel()
	runs.Wait()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	_ = p.Stop(stopCtx)

	slices.SortFunc(all, func(a, b *outbox.Event) int { return int(a.Seq - b.Seq) })
	pos := map[string]int{}
	for i, e := range all {
		pos[e.EntityID] = i
	}
	mu.Lock()
	defer mu.Unlock()
	last := map[string]int{}
	first := map[string]bool{}
	for _, name := range accepted {
		if first[name] {
			continue
		}
		first[name] = true
		key, _, _ := strings.Cut(name, "/")
		if prev, ok := last[key]; ok && prev > pos[name] {
			t.Fatalf("key %s: %s delivered after a later event of its key", key, name)
		}
		last[key] = pos[name]
	}
	moved := countTable(t, env.db)
	t.Logf("%d events; %d attempts failed; %d events went through the events table", len(all), failures, moved)
	if failures > 0 && moved == 0 {
		t.Fatal("attempts failed but nothing moved to the events table")
	}
}

// TestLogRelayWakeups: a relay with an hour's PollInterval and head polls off
// delivers at once after Log.Transact and after Log.Committed; with head polls on,
// it delivers what another pool committed without a wake-up.
func TestLogRelayWakeups(t *testing.T) {
	t.Parallel()
	deliveredIn := func(t *testing.T, r *sqlite.LogRelay, got <-chan string, appendIt func(), want string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		var run sync.WaitGroup
		run.Go(func() { _ = r.Run(ctx) })
		defer func() { cancel(); run.Wait() }()
		appendIt()
		deadline := time.Minute
		if d, ok := t.Deadline(); ok {
			deadline = time.Until(d) - 5*time.Second
		}
		select {
		case name := <-got:
			if name != want {
				t.Fatalf("delivered %s, want %s", name, want)
			}
		case <-time.After(deadline):
			t.Fatalf("%s not delivered: no wake-up", want)
		}
	}
	sink := func() (outbox.Handler, chan string) {
		got := make(chan string, 10)
		return outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error { got <- e.EntityID; return nil }), got
	}
	t.Run("Transact", func(t *testing.T) {
		t.Parallel()
		env := newRelayEnv(t)
		h, got := sink()
		r := env.relay(t, h, sqlite.LogRelayConfig{PollInterval: time.Hour, HeadPollInterval: -1})
		// The first step finds the log empty; then only a wake-up can start the next.
		deliveredIn(t, r, got, func() { env.appendNames(t, "x/1") }, "x/1")
	})
	t.Run("Committed", func(t *testing.T) {
		t.Parallel()
		env := newRelayEnv(t)
		h, got := sink()
		r := env.relay(t, h, sqlite.LogRelayConfig{PollInterval: time.Hour, HeadPollInterval: -1})
		deliveredIn(t, r, got, func() {
			appendCommitted(t, env.db, env.log, keyedEvents("y/1")...)
			env.log.Committed()
		}, "y/1")
	})
	t.Run("head poll", func(t *testing.T) {
		t.Parallel()
		env := newRelayEnv(t)
		other := openRelayEnv(t, env.path)
		h, got := sink()
		r := env.relay(t, h, sqlite.LogRelayConfig{PollInterval: time.Hour})
		deliveredIn(t, r, got, func() { appendCommitted(t, other.db, other.log, keyedEvents("z/1")...) }, "z/1")
	})
}

func TestLogRelayConfigValidate(t *testing.T) {
	t.Parallel()
	for field, cfg := range map[string]sqlite.LogRelayConfig{
		"BatchSize":         {BatchSize: -1},
		"MaxConcurrent":     {MaxConcurrent: -1},
		"PollInterval":      {PollInterval: -time.Second},
		"LeaseDuration":     {LeaseDuration: time.Millisecond},
		"Retry.MaxAttempts": {Retry: outbox.RetryPolicy{MaxAttempts: -1}},
		"Breaker.Cooldown":  {Breaker: outbox.BreakerConfig{Cooldown: -1}},
	} {
		err := cfg.Validate()
		var fe *outbox.FieldError
		if !errors.As(err, &fe) || fe.Field != "sqlite.LogRelayConfig."+field {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := (sqlite.LogRelayConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	env := newRelayEnv(t)
	if _, err := sqlite.NewLogRelay(context.Background(), env.log, env.store, nil, sqlite.LogRelayConfig{}); err == nil {
		t.Error("a nil handler was accepted")
	}
}

// TestLogRelayKeyLookupUsesTheKeyIndex: the lookup of a batch's ordering keys in the
// events table searches the table's partial key index, key by key, and scans nothing.
func TestLogRelayKeyLookupUsesTheKeyIndex(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	rows, err := env.db.Query(`EXPLAIN QUERY PLAN `+sqlite.UnfinishedLogKeysQuery,
		sql.Named("keys", `["a","b"]`), sql.Named("skip_given_up", false))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	joined := strings.Join(plan, "; ")
	if !strings.Contains(joined, "SEARCH outbox_events USING") || !strings.Contains(joined, "outbox_events_key") ||
		strings.Contains(joined, "SCAN outbox_events") {
		t.Fatalf("plan: %s", joined)
	}
}

// TestLogRelayChildProcess is the relay process of TestLogRelayKilledProcess: a
// LogRelay on the database named by OUTBOX_LOG_RELAY_CHILD_DB that prints each
// delivery it starts and hangs in its fourth, until it is killed.
func TestLogRelayChildProcess(t *testing.T) {
	path := os.Getenv("OUTBOX_LOG_RELAY_CHILD_DB")
	if path == "" {
		t.Skip("the relay process of TestLogRelayKilledProcess")
	}
	ctx := context.Background()
	env := openRelayEnv(t, path)
	var calls atomic.Int32
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		fmt.Printf("delivering %s\n", e.EntityID)
		if calls.Add(1) == 4 {
			<-ctx.Done() // mid-delivery, until the parent kills this process
		}
		return nil
	})
	r := env.relay(t, h, sqlite.LogRelayConfig{Owner: "child", MaxConcurrent: 1, HandlerTimeout: -1})
	_, _ = r.Step(ctx)
}

// TestLogRelayKilledProcess: a relay in another process takes the cursor and is
// SIGKILLed in the middle of its batch. While its lease runs, a relay in this process
// finds the cursor Busy (the lease holds across processes); nothing was moved and the
// cursor stayed; once the lease has run out (the clock moved past it), this relay
// delivers the whole batch again, each key in order.
func TestLogRelayKilledProcess(t *testing.T) {
	t.Parallel()
	env := newRelayEnv(t)
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("k%d/%d", i%3, i))
	}
	events := env.appendNames(t, names...)
	child := exec.Command(os.Args[0], "-test.run=^TestLogRelayChildProcess$", "-test.count=1")
	child.Env = append(os.Environ(), "OUTBOX_LOG_RELAY_CHILD_DB="+env.path)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for started := 0; started < 4; {
		if !lines.Scan() {
			t.Fatalf("child exited after %d deliveries started: %v", started, lines.Err())
		}
		if strings.HasPrefix(lines.Text(), "delivering ") {
			started++
		}
	}
	clock := outboxtest.NewClock(time.Now())
	rec := &receiver{}
	r := env.relay(t, rec, sqlite.LogRelayConfig{Clock: clock, Owner: "parent"})
	if st, err := r.Step(context.Background()); err != nil || !st.Busy {
		t.Fatalf("while the child delivers: %+v, %v; want Busy", st, err)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
	if c := readCursorRow(t, env.db, sqlite.DefaultLogRelayCursor); c.after != 0 || c.owner.String != "child" {
		t.Fatalf("after the kill, cursor: %+v; want unmoved, leased by the child", c)
	}
	if st, err := r.Step(context.Background()); err != nil || !st.Busy {
		t.Fatalf("before the dead child's lease ran out: %+v, %v; want Busy", st, err)
	}
	clock.Advance(outbox.DefaultLeaseDuration + time.Second)
	if st, err := r.Drain(context.Background()); err != nil || st.Delivered != 10 {
		t.Fatalf("after the lease ran out: %+v, %v; want all 10 delivered again", st, err)
	}
	checkKeyOrder(t, rec.got(), events)
	if n := countTable(t, env.db); n != 0 {
		t.Fatalf("%d events in the table", n)
	}
}
