// Package inboxtest is the behaviour suite every inbox dialect passes: a redelivered
// message has no second effect, concurrent duplicates apply once, a rolled-back effect
// is applied by the next delivery, Process reports what the commit kept, and cleanup
// deletes in bounded batches.
//
//	func TestInbox(t *testing.T) {
//		inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
//			return inboxtest.Harness{DB: openTestDB(t), Dialect: inbox.Postgres, Connector: testConnector(t)}
//		})
//	}
package inboxtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/outboxtest"
)

// Harness is a database for the suite. The suite creates its own uniquely named
// tables in it (the inbox, and an effect table without a unique key, so that a second
// effect would show) and drops them at the end, so one database can serve every test.
type Harness struct {
	DB      *sql.DB
	Dialect inbox.Dialect
	// Connector, when set, connects to the same database as DB. The suite wraps it in
	// a driver that interferes with commits (the caller's context cancelled as COMMIT
	// starts, a COMMIT's reply lost, a COMMIT that fails) to check that Process reports
	// what the database kept; those tests are skipped without it.
	Connector driver.Connector
}

// Option changes how Run runs the suite.
type Option func(*options)

type options struct{ parallel bool }

// Parallel runs the tests in parallel. Each test makes its own uniquely named tables,
// so that is safe whenever the harnesses' databases take concurrent connections (a
// SQLite harness should open a file of its own per test).
func Parallel() Option { return func(o *options) { o.parallel = true } }

// Run runs the suite; newHarness is called once per test. The tests run one at a time
// unless Parallel is given.
func Run(t *testing.T, newHarness func(t *testing.T) Harness, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"DuplicateHasNoSecondEffect", testDuplicate},
		{"DuplicateInCallersTransaction", testDuplicateTx},
		{"ConcurrentDuplicatesApplyOnce", testConcurrentDuplicates},
		{"DuplicateWaitsForOpenTransaction", testWaitsForOpen},
		{"DuplicateAtRepeatableRead", func(t *testing.T, f *fixture) { testIsolation(t, f, sql.LevelRepeatableRead) }},
		{"DuplicateAtSerializable", func(t *testing.T, f *fixture) { testIsolation(t, f, sql.LevelSerializable) }},
		{"RolledBackEffectIsRetried", testRolledBack},
		{"CancelBeforeCommitKeepsNothing", testCancelBeforeCommit},
		{"CancelDuringCommitIsApplied", testCancelDuringCommit},
		{"LostCommitReplyIsApplied", testLostCommitReply},
		{"FailedCommitKeepsNothing", testFailedCommit},
		{"ConcurrentDuplicatesAfterRollback", testConcurrentAfterRollback},
		{"CleanupIsBounded", testCleanup},
		{"ExpiredMessageIsRefused", testExpired},
		{"BadInputWritesNothing", testBadInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if o.parallel {
				t.Parallel()
			}
			tt.fn(t, newFixture(t, newHarness(t)))
		})
	}
}

// fixture is one test's inbox and effect table.
type fixture struct {
	h       Harness
	clock   *outboxtest.Clock
	inbox   *inbox.Inbox
	cfg     inbox.Config
	effects string
}

func newFixture(t *testing.T, h Harness) *fixture {
	t.Helper()
	ctx := context.Background()
	suffix := randomSuffix()
	f := &fixture{h: h, clock: outboxtest.NewClock(time.Now()), effects: "inboxtest_effects_" + suffix}
	f.cfg = inbox.Config{Dialect: h.Dialect, Table: "inboxtest_" + suffix, Clock: f.clock, Retention: time.Hour}
	if _, err := inbox.Migrate(ctx, h.DB, f.cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DB.ExecContext(ctx, `CREATE TABLE `+f.effects+` (msg_id VARCHAR(255) NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, table := range []string{f.effects, f.cfg.Table, f.cfg.Table + "_schema_migrations"} {
			if _, err := h.DB.ExecContext(context.Background(), `DROP TABLE IF EXISTS `+table); err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		}
	})
	var err error
	if f.inbox, err = inbox.New(ctx, h.DB, f.cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// effect is a message's effect: one row in the effect table.
func (f *fixture) effect(msgID string) func(tx *sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO `+f.effects+` (msg_id) VALUES (`+f.ph(1)+`)`, msgID)
		return err
	}
}

func (f *fixture) ph(n int) string {
	if f.h.Dialect == inbox.Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// effects counts msgID's effects.
func (f *fixture) effectsOf(t *testing.T, msgID string) int {
	t.Helper()
	var n int
	if err := f.h.DB.QueryRow(`SELECT count(*) FROM `+f.effects+` WHERE msg_id = `+f.ph(1), msgID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) count(t *testing.T) int {
	t.Helper()
	n, err := f.inbox.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func testDuplicate(t *testing.T, f *fixture) {
	ctx := context.Background()
	id := newID()
	for i, want := range []bool{true, false, false} {
		applied, err := f.inbox.Process(ctx, id, f.effect(id))
		if err != nil || applied != want {
			t.Fatalf("delivery %d: applied %v, %v; want %v, nil", i+1, applied, err, want)
		}
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects after three deliveries, want 1", n)
	}
	if st := f.inbox.Stats(); st.Applied != 1 || st.Duplicates != 2 {
		t.Fatalf("stats %+v, want 1 applied and 2 duplicates", st)
	}
}

func testDuplicateTx(t *testing.T, f *fixture) {
	ctx := context.Background()
	id := newID()
	for i, want := range []bool{true, false} {
		tx, err := f.h.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		applied, err := f.inbox.ProcessTx(ctx, tx, id, f.effect(id))
		if err != nil || applied != want {
			tx.Rollback()
			t.Fatalf("delivery %d: applied %v, %v; want %v, nil", i+1, applied, err, want)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
}

// Eight consumers get the same message at the same moment, twenty times over.
func testConcurrentDuplicates(t *testing.T, f *fixture) {
	const consumers, messages = 8, 20
	ctx := context.Background()
	for range messages {
		id := newID()
		start := make(chan struct{})
		var wg sync.WaitGroup
		results := make(chan error, consumers)
		var mu sync.Mutex
		applied := 0
		for range consumers {
			wg.Go(func() {
				<-start
				ok, err := f.inbox.Process(ctx, id, f.effect(id))
				if ok {
					mu.Lock()
					applied++
					mu.Unlock()
				}
				results <- err
			})
		}
		close(start)
		wg.Wait()
		close(results)
		for err := range results {
			if err != nil {
				t.Fatalf("a concurrent duplicate failed: %v", err)
			}
		}
		if applied != 1 {
			t.Fatalf("%d of %d concurrent deliveries applied, want 1", applied, consumers)
		}
		if n := f.effectsOf(t, id); n != 1 {
			t.Fatalf("%d effects, want 1", n)
		}
	}
	if st := f.inbox.Stats(); st.Applied != messages || st.Duplicates != messages*(consumers-1) {
		t.Fatalf("stats %+v, want %d applied and %d duplicates", st, messages, messages*(consumers-1))
	}
}

// holdOpen processes id in a transaction it leaves open, and returns it.
func (f *fixture) holdOpen(t *testing.T, id string) *sql.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := f.h.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if applied, err := f.inbox.ProcessTx(ctx, tx, id, f.effect(id)); err != nil || !applied {
		tx.Rollback()
		t.Fatalf("first delivery: applied %v, %v", applied, err)
	}
	return tx
}

// deliverAll delivers id to n consumers at once and returns how many applied it.
func (f *fixture) deliverAll(t *testing.T, id string, n int, whileRunning func()) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied, errs := 0, []error{}
	for range n {
		wg.Go(func() {
			ok, err := f.inbox.Process(context.Background(), id, f.effect(id))
			mu.Lock()
			defer mu.Unlock()
			if ok {
				applied++
			}
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	whileRunning()
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent deliveries failed: %v", errors.Join(errs...))
	}
	return applied
}

// While one consumer's transaction holding the message is open, seven more arrive;
// it commits: they are all duplicates.
func testWaitsForOpen(t *testing.T, f *fixture) {
	id := newID()
	tx := f.holdOpen(t, id)
	applied := f.deliverAll(t, id, 7, func() {
		if err := tx.Commit(); err != nil {
			t.Error(err)
		}
	})
	if applied != 0 {
		t.Fatalf("%d deliveries applied after the first committed, want 0", applied)
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
}

// The first consumer's transaction rolls back while seven more wait: one of them applies.
func testConcurrentAfterRollback(t *testing.T, f *fixture) {
	id := newID()
	tx := f.holdOpen(t, id)
	applied := f.deliverAll(t, id, 7, func() {
		if err := tx.Rollback(); err != nil {
			t.Error(err)
		}
	})
	if applied != 1 {
		t.Fatalf("%d deliveries applied after the first rolled back, want 1", applied)
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
}

// A transaction at REPEATABLE READ or SERIALIZABLE took its snapshot before another
// committed the message: ProcessTx reports a duplicate, and the transaction is still
// usable and commits.
func testIsolation(t *testing.T, f *fixture, level sql.IsolationLevel) {
	if f.h.Dialect == inbox.SQLite {
		t.Skip("SQLite has no isolation levels to choose: its writers take turns")
	}
	if f.h.Dialect == inbox.MySQL && level == sql.LevelSerializable {
		t.Skip("InnoDB's SERIALIZABLE reads lock instead of reading a snapshot: a read cannot predate the other's commit")
	}
	ctx := context.Background()
	id := newID()
	first := f.holdOpen(t, id)
	late, err := f.h.DB.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback()
	var n int
	if err := late.QueryRow(`SELECT count(*) FROM ` + f.effects).Scan(&n); err != nil { // takes the snapshot
		t.Fatal(err)
	}
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	applied, err := f.inbox.ProcessTx(ctx, late, id, f.effect(id))
	if err != nil || applied {
		t.Fatalf("late delivery at %s: applied %v, %v; want a duplicate without error", level, applied, err)
	}
	other := newID()
	if applied, err := f.inbox.ProcessTx(ctx, late, other, f.effect(other)); err != nil || !applied {
		t.Fatalf("next message in the same transaction: applied %v, %v", applied, err)
	}
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	if f.effectsOf(t, id) != 1 || f.effectsOf(t, other) != 1 {
		t.Fatalf("effects: %d of the duplicate, %d of the next; want 1 each", f.effectsOf(t, id), f.effectsOf(t, other))
	}
}

var errBoom = errors.New("effect failed")

func testRolledBack(t *testing.T, f *fixture) {
	ctx := context.Background()
	id := newID()
	applied, err := f.inbox.Process(ctx, id, func(tx *sql.Tx) error {
		if err := f.effect(id)(tx); err != nil {
			return err
		}
		return errBoom // after writing: the write must go too
	})
	if !errors.Is(err, errBoom) || applied {
		t.Fatalf("failed effect: applied %v, %v; want false and the effect's error", applied, err)
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("%d IDs recorded after a failed effect, want 0", n)
	}
	if n := f.effectsOf(t, id); n != 0 {
		t.Fatalf("%d effects after a failed effect, want 0", n)
	}

	// The caller's own transaction, rolled back by the caller.
	tx, err := f.h.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.inbox.ProcessTx(ctx, tx, id, func(tx *sql.Tx) error { return errBoom }); !errors.Is(err, errBoom) {
		t.Fatalf("ProcessTx returned %v, want the effect's error", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	for i, want := range []bool{true, false} {
		applied, err := f.inbox.Process(ctx, id, f.effect(id))
		if err != nil || applied != want {
			t.Fatalf("redelivery %d: applied %v, %v; want %v", i+1, applied, err, want)
		}
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
	if st := f.inbox.Stats(); st.Failed != 2 || st.Applied != 1 || st.Duplicates != 1 {
		t.Fatalf("stats %+v, want 2 failed, 1 applied, 1 duplicate", st)
	}
}

func testCleanup(t *testing.T, f *fixture) {
	ctx := context.Background()
	// Keys that carry no time, so only the processing time counts.
	for i := range 25 {
		if _, err := f.inbox.Process(ctx, fmt.Sprintf("old-%02d", i), f.effect("x")); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Second)
	}
	f.clock.Advance(f.cfg.Retention)
	for i := range 3 {
		if _, err := f.inbox.Process(ctx, fmt.Sprintf("new-%d", i), f.effect("x")); err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	for {
		n, err := f.inbox.Cleanup(ctx, f.clock.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		if n < 10 {
			break
		}
	}
	if want := []int{10, 10, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cleanup batches deleted %v, want %v", got, want)
	}
	if n := f.count(t); n != 3 {
		t.Fatalf("%d IDs left, want the 3 within the window", n)
	}
	if _, err := f.inbox.Cleanup(ctx, f.clock.Now(), 0); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("Cleanup with limit 0: %v, want ErrInvalid", err)
	}
	// An ID within its window is a duplicate still.
	if applied, err := f.inbox.Process(ctx, "new-0", f.effect("x")); err != nil || applied {
		t.Fatalf("redelivery within the window: applied %v, %v", applied, err)
	}
}

func testExpired(t *testing.T, f *fixture) {
	ctx := context.Background()
	old, err := uuid.NewV7FromReader(rand.Reader) // then backdate its timestamp
	if err != nil {
		t.Fatal(err)
	}
	ms := f.clock.Now().Add(-f.cfg.Retention - time.Minute).UnixMilli()
	for i := range 6 {
		old[i] = byte(ms >> (8 * (5 - i)))
	}
	ran := false
	applied, err := f.inbox.Process(ctx, old.String(), func(tx *sql.Tx) error { ran = true; return nil })
	if !errors.Is(err, inbox.ErrExpired) || applied || ran {
		t.Fatalf("expired message: applied %v, ran %v, %v; want ErrExpired, not run", applied, ran, err)
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("%d IDs recorded, want 0", n)
	}
	if st := f.inbox.Stats(); st.Expired != 1 {
		t.Fatalf("stats %+v, want 1 expired", st)
	}
	// Within the window by a minute: applied.
	ms = f.clock.Now().Add(-f.cfg.Retention + time.Minute).UnixMilli()
	for i := range 6 {
		old[i] = byte(ms >> (8 * (5 - i)))
	}
	if applied, err := f.inbox.Process(ctx, old.String(), f.effect("x")); err != nil || !applied {
		t.Fatalf("message within the window: applied %v, %v", applied, err)
	}
}

func testBadInput(t *testing.T, f *fixture) {
	ctx := context.Background()
	for _, id := range []string{"", strings.Repeat("x", inbox.MaxIDLength+1)} {
		ran := false
		_, err := f.inbox.Process(ctx, id, func(tx *sql.Tx) error { ran = true; return nil })
		if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "msgID") || ran {
			t.Fatalf("ID of %d bytes: %v (ran %v); want ErrInvalid naming msgID", len(id), err, ran)
		}
	}
	if _, err := f.inbox.Process(ctx, newID(), nil); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("nil fn: %v, want ErrInvalid", err)
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("%d IDs recorded, want 0", n)
	}
	long := strings.Repeat("y", inbox.MaxIDLength)
	if applied, err := f.inbox.Process(ctx, long, f.effect("y")); err != nil || !applied {
		t.Fatalf("ID of the longest length: applied %v, %v", applied, err)
	}
}

// recorder is an Observer that keeps the results it is told.
type recorder struct {
	mu      sync.Mutex
	results []inbox.Result
}

func (r *recorder) ObserveMessage(res inbox.Result, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
}

func (r *recorder) ObserveCleanup(int, time.Duration) {}

func (r *recorder) seen() []inbox.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]inbox.Result(nil), r.results...)
}

// hooked returns an inbox on the fixture's tables, reached through the interfering
// driver (commit.go), and the observer it reports to.
func (f *fixture) hooked(t *testing.T) (*inbox.Inbox, *recorder) {
	t.Helper()
	if f.h.Connector == nil {
		t.Skip("the harness has no Connector: cannot interfere with commits")
	}
	db := sql.OpenDB(hookConnector{f.h.Connector})
	t.Cleanup(func() { db.Close() })
	rec := &recorder{}
	cfg := f.cfg
	cfg.Observer = rec
	ib, err := inbox.New(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ib, rec
}

// checkKept fails t unless what ib reported for id (applied, err, Stats, the
// observer) and what the database holds both say want: Applied with one effect and
// the ID recorded, or Failed with neither. A redelivery is then a duplicate, or
// applies.
func (f *fixture) checkKept(t *testing.T, ib *inbox.Inbox, rec *recorder, id string, applied bool, err error, want inbox.Result) {
	t.Helper()
	kept := f.effectsOf(t, id)
	if n := f.count(t); n != kept {
		t.Fatalf("%d IDs recorded and %d effects: they must be kept together", n, kept)
	}
	st := ib.Stats()
	switch want {
	case inbox.Applied:
		if !applied || err != nil || kept != 1 {
			t.Fatalf("Process returned applied %v, %v with %d effects kept; want applied, nil and 1 effect", applied, err, kept)
		}
		if st.Applied != 1 || st.Failed != 0 {
			t.Fatalf("stats %+v, want 1 applied, 0 failed", st)
		}
	default:
		if applied || err == nil || kept != 0 {
			t.Fatalf("Process returned applied %v, %v with %d effects kept; want an error and nothing kept", applied, err, kept)
		}
		if st.Applied != 0 || st.Failed != 1 {
			t.Fatalf("stats %+v, want 0 applied, 1 failed", st)
		}
	}
	if got := rec.seen(); len(got) != 1 || got[0] != want {
		t.Fatalf("observer saw %v, want [%s]", got, want)
	}
	again, err := f.inbox.Process(context.Background(), id, f.effect(id))
	if err != nil || again != (want != inbox.Applied) {
		t.Fatalf("redelivery: applied %v, %v; want applied %v", again, err, want != inbox.Applied)
	}
	if n := f.effectsOf(t, id); n != 1 {
		t.Fatalf("%d effects after the redelivery, want 1", n)
	}
}

// The caller's context ends inside the effect, before the commit: the transaction is
// rolled back, and Process says so.
func testCancelBeforeCommit(t *testing.T, f *fixture) {
	rec := &recorder{}
	cfg := f.cfg
	cfg.Observer = rec
	ib, err := inbox.New(context.Background(), f.h.DB, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id := newID()
	applied, err := ib.Process(ctx, id, func(tx *sql.Tx) error {
		if err := f.effect(id)(tx); err != nil {
			return err
		}
		cancel() // the sender hung up while the effect ran
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Process returned %v, want context.Canceled", err)
	}
	f.checkKept(t, ib, rec, id, applied, err, inbox.Failed)
}

// The caller's context is cancelled just as the driver's commit is called (the
// sender's connection dropped during COMMIT): the commit is not interrupted, and
// Process reports Applied.
func testCancelDuringCommit(t *testing.T, f *fixture) {
	ib, rec := f.hooked(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id := newID()
	ctx = withCommitHook(ctx, func(tx driver.Tx) error {
		cancel()
		return tx.Commit()
	})
	applied, err := ib.Process(ctx, id, f.effect(id))
	f.checkKept(t, ib, rec, id, applied, err, inbox.Applied)
}

var errLostReply = errors.New("connection reset by peer (the commit's reply was lost)")

// The database commits, but its reply is lost and the driver reports an error:
// Process finds the commit and reports Applied, not Failed.
func testLostCommitReply(t *testing.T, f *fixture) {
	ib, rec := f.hooked(t)
	id := newID()
	ctx := withCommitHook(context.Background(), func(tx driver.Tx) error {
		if err := tx.Commit(); err != nil {
			return err
		}
		return errLostReply
	})
	applied, err := ib.Process(ctx, id, f.effect(id))
	f.checkKept(t, ib, rec, id, applied, err, inbox.Applied)
}

var errCommitFailed = errors.New("commit failed")

// The commit fails and the database kept nothing: Process reports Failed with the
// commit's error, and the redelivery applies.
func testFailedCommit(t *testing.T, f *fixture) {
	ib, rec := f.hooked(t)
	id := newID()
	ctx := withCommitHook(context.Background(), func(tx driver.Tx) error {
		if err := tx.Rollback(); err != nil {
			return err
		}
		return errCommitFailed
	})
	applied, err := ib.Process(ctx, id, f.effect(id))
	if !errors.Is(err, errCommitFailed) {
		t.Fatalf("Process returned %v, want the commit's error", err)
	}
	f.checkKept(t, ib, rec, id, applied, err, inbox.Failed)
}
