package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
)

// newTestLog opens a fresh database file in t's temporary directory, creates the log
// in it, and returns the database, the log and the file's path.
func newTestLog(t testing.TB) (*sql.DB, *sqlite.Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.db")
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, migratedLog(t, db), path
}

// migratedLog runs MigrateLog on db and returns its Log, closed when t ends.
func migratedLog(t testing.TB, db *sql.DB) *sqlite.Log {
	t.Helper()
	ctx := context.Background()
	if _, err := sqlite.MigrateLog(ctx, db); err != nil {
		t.Fatal(err)
	}
	l, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// appendCommitted appends events in one committed transaction.
func appendCommitted(t testing.TB, db *sql.DB, l *sqlite.Log, events ...*outbox.Event) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := l.AppendTx(ctx, tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func logEvents(n int, prefix string) []*outbox.Event {
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = outbox.NewEvent("order.created", fmt.Sprintf("%s-%d", prefix, i), "u")
	}
	return events
}

func logCursor(t testing.TB, l *sqlite.Log, name string) *sqlite.LogCursor {
	t.Helper()
	c, err := l.Cursor(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readLog(t testing.TB, c *sqlite.LogCursor, limit int) *sqlite.LogBatch {
	t.Helper()
	b, err := c.Read(context.Background(), limit)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func entities(events []outbox.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.EntityID)
	}
	return out
}

func TestLogMigrateCreatesOnlyItsOwnTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{}); !errors.Is(err, sqlite.ErrNotMigrated) {
		t.Fatalf("NewLog before MigrateLog = %v, want ErrNotMigrated", err)
	}
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	schema := func() map[string]string {
		rows, err := db.QueryContext(ctx, `SELECT type || ' ' || name, coalesce(sql, '') FROM sqlite_master`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]string{}
		for rows.Next() {
			var name, sql string
			if err := rows.Scan(&name, &sql); err != nil {
				t.Fatal(err)
			}
			m[name] = sql
		}
		return m
	}
	before := schema()
	if v, err := sqlite.MigrateLog(ctx, db); err != nil || !slices.Equal(v, []int{1, 2, 3}) {
		t.Fatalf("MigrateLog = %v, %v; want [1 2 3]", v, err)
	}
	if v, err := sqlite.MigrateLog(ctx, db); err != nil || len(v) != 0 {
		t.Fatalf("MigrateLog again = %v, %v; want nothing to do", v, err)
	}
	after := schema()
	var added []string
	for name, sql := range after {
		if old, ok := before[name]; !ok {
			added = append(added, name)
		} else if old != sql {
			t.Errorf("MigrateLog changed %s", name)
		}
	}
	slices.Sort(added)
	// The log's table, its cursors, its relays' counts and its bookkeeping: no index, no
	// sequence table.
	want := []string{"table outbox_log", "table outbox_log_cursors", "table outbox_log_delivered", "table outbox_log_schema_migrations"}
	if !slices.Equal(added, want) {
		t.Fatalf("MigrateLog added %v, want %v", added, want)
	}
	if strings.Contains(strings.ToUpper(after["table outbox_log"]), "AUTOINCREMENT") {
		t.Error("outbox_log has AUTOINCREMENT: every append would write sqlite_sequence")
	}
	if _, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{MaxPayloadBytes: -1}); err == nil {
		t.Error("NewLog took a negative MaxPayloadBytes")
	}
}

func TestLogAppendTxReadsBackWhatWasWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _, _ := newTestLog(t)
	hooked := 0
	l, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{MaxPayloadBytes: 64, OnEnqueue: func(_ context.Context, e outbox.Event) map[string]string {
		hooked++
		return map[string]string{"trace": "t-" + e.EntityID}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	full := outbox.NewEvent("order.created", "order-1", "user-1")
	full.OrderingKey, full.MaxAttempts, full.Priority, full.IsNewRecord = "key-1", 7, 3, true
	full.Payload = json.RawMessage(`{"quantity": 72.5}`)
	bare := outbox.NewEvent("order.deleted", "order-2", "")
	bare.ID = "0190A5E0-0000-7000-8000-00000000000A" // a caller's ID, in another spelling
	appendCommitted(t, db, l, full, bare)
	if full.Seq != 1 || bare.Seq != 2 || full.Status != outbox.StatusPending || full.CreatedAt.IsZero() {
		t.Fatalf("AppendTx filled seq %d, %d, status %q, created %v", full.Seq, bare.Seq, full.Status, full.CreatedAt)
	}
	if hooked != 2 {
		t.Fatalf("OnEnqueue ran %d times, want 2", hooked)
	}

	// Invalid events, a nil tx, a rolled-back transaction: nothing written.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tooBig := outbox.NewEvent("t", "e", "u")
	tooBig.Payload = json.RawMessage(`"` + strings.Repeat("x", 64) + `"`)
	for _, bad := range [][]*outbox.Event{
		{outbox.NewEvent("t", "ok", "u"), outbox.NewEvent("", "no-type", "u")},
		{tooBig},
		{outbox.NewEvent("t", "ok", "u"), nil},
	} {
		if err := l.AppendTx(ctx, tx, bad...); !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("AppendTx(invalid) = %v, want ErrInvalid", err)
		}
	}
	if err := l.AppendTx(ctx, tx, outbox.NewEvent("t", "rolled-back", "u")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendTx(ctx, nil, outbox.NewEvent("t", "e", "u")); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("AppendTx(nil tx) = %v, want ErrInvalid", err)
	}

	got := readLog(t, logCursor(t, l, "c"), 10).Events
	if len(got) != 2 {
		t.Fatalf("read %v, want the two committed events", entities(got))
	}
	for i, want := range []*outbox.Event{full, bare} {
		w := *want
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("event %d read back as\n%+v\nwant\n%+v", i, got[i], w)
		}
	}
	if got[1].ID != "0190a5e0-0000-7000-8000-00000000000a" {
		t.Errorf("caller's ID stored as %q, want its canonical spelling", got[1].ID)
	}
}

func TestLogCursorAtLeastOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l, _ := newTestLog(t)
	appendCommitted(t, db, l, logEvents(10, "e")...)

	c := logCursor(t, l, "relay")
	first := readLog(t, c, 4)
	if got := entities(first.Events); !slices.Equal(got, []string{"e-0", "e-1", "e-2", "e-3"}) {
		t.Fatalf("first read %v", got)
	}
	// Not acknowledged: the same events again, from this cursor and from another of
	// its name (a reader restarted after a crash).
	again := logCursor(t, l, "relay")
	for _, r := range []*sqlite.LogCursor{c, again} {
		if got := entities(readLog(t, r, 4).Events); !slices.Equal(got, entities(first.Events)) {
			t.Fatalf("unacknowledged re-read %v, want %v", got, entities(first.Events))
		}
	}
	if err := c.Ack(ctx, first); err != nil {
		t.Fatal(err)
	}
	if c.Position() != 4 {
		t.Fatalf("position after ack %d, want 4", c.Position())
	}
	// The other reader's batch was read from the old position: its ack is refused,
	// and it reloads.
	stale := readLog(t, again, 4)
	if err := again.Ack(ctx, stale); !errors.Is(err, sqlite.ErrLogCursorMoved) {
		t.Fatalf("stale ack = %v, want ErrLogCursorMoved", err)
	}
	if got := entities(readLog(t, again, 100).Events); !slices.Equal(got, []string{"e-4", "e-5", "e-6", "e-7", "e-8", "e-9"}) {
		t.Fatalf("after reload read %v", got)
	}
	// Another name reads from the start.
	if got := readLog(t, logCursor(t, l, "audit"), 100).Events; len(got) != 10 {
		t.Fatalf("a new cursor read %d events, want 10", len(got))
	}

	// An empty read writes nothing, and acknowledging it is a no-op.
	rest := readLog(t, c, 100)
	if err := c.Ack(ctx, rest); err != nil {
		t.Fatal(err)
	}
	var updated int64
	if err := db.QueryRowContext(ctx, `SELECT updated_at FROM outbox_log_cursors WHERE name = 'relay'`).Scan(&updated); err != nil {
		t.Fatal(err)
	}
	empty := readLog(t, c, 100)
	if len(empty.Events) != 0 {
		t.Fatalf("read %v past the end", entities(empty.Events))
	}
	if err := c.Ack(ctx, empty); err != nil {
		t.Fatal(err)
	}
	var after int64
	if err := db.QueryRowContext(ctx, `SELECT updated_at FROM outbox_log_cursors WHERE name = 'relay'`).Scan(&after); err != nil || after != updated {
		t.Fatalf("an empty ack wrote the cursor: updated_at %d, was %d (%v)", after, updated, err)
	}

	if _, err := c.Read(ctx, 0); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("Read(0) = %v, want ErrInvalid", err)
	}
	if err := c.Ack(ctx, nil); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("Ack(nil) = %v, want ErrInvalid", err)
	}
	if _, err := l.Cursor(ctx, ""); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("Cursor(\"\") = %v, want ErrInvalid", err)
	}
}

// openDeferred opens a second pool on path whose transactions begin DEFERRED, as a
// program that does not use Open might: it takes the write lock at its first write.
func openDeferred(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or one of its extended codes
// (SQLITE_BUSY_SNAPSHOT: a deferred transaction's snapshot is older than the last
// commit, so it may not write).
func isBusy(err error) bool { return sqliteCode(err)&0xff == 5 }

// sqliteCode is the (extended) result code of the driver's error, 0 for none.
func sqliteCode(err error) int {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return 0
	}
	return coded.Code()
}

// TestLogWritersTakeTurns shows, step by step, why rowid order is commit order: a
// writer holds the write lock from BEGIN IMMEDIATE to its commit, so another writer
// (here on another pool, as another process would be) waits and then appends after
// it, while a reader goes on reading the last committed state; and a deferred
// transaction that read before another writer's commit cannot write at all, so no
// rowid is ever given from an old view of the table.
func TestLogWritersTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l, path := newTestLog(t)
	other, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherLog := migratedLog(t, other)
	c := logCursor(t, l, "c")

	t1, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback()
	first := outbox.NewEvent("t", "first", "u")
	if err := l.AppendTx(ctx, t1, first); err != nil {
		t.Fatal(err)
	}

	second := outbox.NewEvent("t", "second", "u")
	t2done := make(chan error, 1)
	go func() {
		t2done <- func() error {
			tx, err := other.BeginTx(ctx, nil) // waits for t1's lock
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := otherLog.AppendTx(ctx, tx, second); err != nil {
				return err
			}
			return tx.Commit()
		}()
	}()
	select {
	case err := <-t2done:
		t.Fatalf("a second writer finished while the first held the lock: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The reader is not blocked, and sees nothing uncommitted.
	if b := readLog(t, c, 10); len(b.Events) != 0 {
		t.Fatalf("read uncommitted events %v", entities(b.Events))
	}
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-t2done; err != nil {
		t.Fatal(err)
	}
	b := readLog(t, c, 10)
	if got := entities(b.Events); !slices.Equal(got, []string{"first", "second"}) || b.Events[1].Seq <= b.Events[0].Seq {
		t.Fatalf("read %v (seqs %d, %d), want first then second", got, first.Seq, second.Seq)
	}
	if err := c.Ack(ctx, b); err != nil {
		t.Fatal(err)
	}

	// A deferred transaction that read the log before another writer's commit may
	// not write after it: SQLite refuses it (SQLITE_BUSY_SNAPSHOT), so it never
	// appends with a rowid taken from the older view.
	deferred := openDeferred(t, path)
	stale, err := deferred.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Rollback()
	var n int
	if err := stale.QueryRowContext(ctx, `SELECT count(*) FROM outbox_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	appendCommitted(t, db, l, outbox.NewEvent("t", "third", "u"))
	err = l.AppendTx(ctx, stale, outbox.NewEvent("t", "stale", "u"))
	const busySnapshot = 517 // SQLITE_BUSY_SNAPSHOT
	if sqliteCode(err) != busySnapshot {
		t.Fatalf("a deferred transaction with an older snapshot appended: %v, want SQLITE_BUSY_SNAPSHOT", err)
	}
	if got := entities(readLog(t, c, 10).Events); !slices.Equal(got, []string{"third"}) {
		t.Fatalf("read %v, want third", got)
	}
}

// logWriterTxns is how many transactions each concurrent writer runs.
const logWriterTxns = 40

// runLogWriter runs logWriterTxns transactions on db, each of which takes the next
// commit number from log_commits (its first write: the number is the transaction's
// place in the commit order, as rolled-back numbers are taken again), then appends
// 1-4 events carrying that number, with random pauses while it holds the write lock,
// and commits, or rolls back one in ten. A deferred writer reads first, and so may
// lose its turn (SQLITE_BUSY_SNAPSHOT), which counts as a rollback of nothing.
// report gets each ended transaction's events.
func runLogWriter(ctx context.Context, db *sql.DB, l *sqlite.Log, seed uint64, deferred bool, report func(committed bool, events []*outbox.Event)) error {
	rng := rand.New(rand.NewPCG(seed, seed))
	pause := func(max time.Duration) { time.Sleep(time.Duration(rng.Int64N(int64(max)))) }
	for range logWriterTxns {
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if deferred {
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM outbox_log`).Scan(&n); err != nil {
					return err
				}
				pause(200 * time.Microsecond)
			}
			var txn int
			if err := tx.QueryRowContext(ctx, `UPDATE log_commits SET n = n + 1 RETURNING n`).Scan(&txn); err != nil {
				if deferred && isBusy(err) {
					report(false, nil)
					return nil
				}
				return err
			}
			events := make([]*outbox.Event, 1+rng.IntN(4))
			for i := range events {
				pause(500 * time.Microsecond)
				e := outbox.NewEvent("t", fmt.Sprintf("txn-%d", txn), "u")
				e.Payload = json.RawMessage(fmt.Sprintf(`{"txn":%d,"i":%d,"of":%d}`, txn, i, len(events)))
				if err := l.AppendTx(ctx, tx, e); err != nil {
					return err
				}
				events[i] = e
			}
			pause(time.Millisecond)
			if rng.IntN(10) == 0 {
				report(false, events)
				return tx.Rollback()
			}
			if err := tx.Commit(); err != nil {
				return err
			}
			report(true, events)
			return nil
		}()
		if err != nil {
			return err
		}
		// A pause between transactions, as an application's writers have: without
		// one, writers that hand the lock to each other starve the readers'
		// acknowledgements (SQLite's busy handler polls, it does not queue).
		pause(2 * time.Millisecond)
	}
	return nil
}

// TestLogWriterProcess is the other process of
// TestLogCursorConcurrentWritersReadInCommitOrder: two writers on the database named
// by OUTBOX_LOG_WRITER_DB, each ended transaction's events printed as a line
// ("commit" or "rollback", then id:seq pairs).
func TestLogWriterProcess(t *testing.T) {
	path := os.Getenv("OUTBOX_LOG_WRITER_DB")
	if path == "" {
		t.Skip("the writer process of TestLogCursorConcurrentWritersReadInCommitOrder")
	}
	ctx := context.Background()
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	report := func(committed bool, events []*outbox.Event) {
		line := "rollback"
		if committed {
			line = "commit"
		}
		for _, e := range events {
			line += fmt.Sprintf(" %s:%d", e.ID, e.Seq)
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Println(line)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for w := range 2 {
		wg.Go(func() { errs <- runLogWriter(ctx, db, l, uint64(1000+w), false, report) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestLogCursorConcurrentWritersReadInCommitOrder: writers in this process on one
// pool (BEGIN IMMEDIATE), on a second pool with deferred transactions, and in another
// process, each holding its transaction open for random pauses and rolling back one
// in ten, while two cursors read (at small, random limits), acknowledge and trim
// behind them. Every committed event is read exactly once by each cursor, in commit
// order (the order of the numbers the transactions took from a counter row, their
// first write), none skipped; no rolled-back event is read; and rolled-back rowids
// were given again to later commits, harmlessly.
func TestLogCursorConcurrentWritersReadInCommitOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, l, path := newTestLog(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE log_commits (n INTEGER NOT NULL); INSERT INTO log_commits VALUES (0)`); err != nil {
		t.Fatal(err)
	}
	deferredDB := openDeferred(t, path)
	deferredLog, err := sqlite.NewLog(ctx, deferredDB, sqlite.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer deferredLog.Close()

	var (
		mu         sync.Mutex
		committed  = map[string]int64{} // event ID → seq
		rolledBack = map[string]int64{}
		txns       = map[bool]int{}
	)
	record := func(ok bool, id string, seq int64) {
		if ok {
			committed[id] = seq
		} else {
			rolledBack[id] = seq
		}
	}
	report := func(ok bool, events []*outbox.Event) {
		mu.Lock()
		defer mu.Unlock()
		txns[ok]++
		for _, e := range events {
			record(ok, e.ID, e.Seq)
		}
	}

	// The other process.
	proc := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLogWriterProcess$", "-test.count=1")
	proc.Env = append(os.Environ(), "OUTBOX_LOG_WRITER_DB="+path)
	stdout, err := proc.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	proc.Stderr = &stderr
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	procDone := make(chan error, 1)
	go func() {
		var procTxns int
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || (fields[0] != "commit" && fields[0] != "rollback") {
				continue
			}
			procTxns++
			mu.Lock()
			txns[fields[0] == "commit"]++
			for _, f := range fields[1:] {
				id, seq, _ := strings.Cut(f, ":")
				n, err := strconv.ParseInt(seq, 10, 64)
				if err != nil {
					t.Errorf("writer process printed %q", sc.Text())
				}
				record(fields[0] == "commit", id, n)
			}
			mu.Unlock()
		}
		err := proc.Wait()
		if err == nil && procTxns != 2*logWriterTxns {
			err = fmt.Errorf("it reported %d transactions, want %d", procTxns, 2*logWriterTxns)
		}
		procDone <- err
	}()

	// The writers of this process.
	const immediate, deferredWriters = 4, 2
	var (
		writers         sync.WaitGroup
		deferredCommits atomic.Int64
	)
	writerErrs := make(chan error, immediate+deferredWriters)
	for w := range immediate + deferredWriters {
		writers.Go(func() {
			if w < immediate {
				writerErrs <- runLogWriter(ctx, db, l, uint64(w), false, report)
			} else {
				writerErrs <- runLogWriter(ctx, deferredDB, deferredLog, uint64(w), true, func(ok bool, events []*outbox.Event) {
					if ok {
						deferredCommits.Add(1)
					}
					report(ok, events)
				})
			}
		})
	}
	var writing atomic.Bool
	writing.Store(true)
	writersDone := make(chan struct{})
	go func() {
		defer close(writersDone)
		writers.Wait()
		if err := <-procDone; err != nil && ctx.Err() == nil {
			t.Errorf("writer process: %v\n%s", err, stderr.String())
		}
		writing.Store(false)
	}()
	// On a failure below, stop the writers (and the process) before the test ends.
	defer func() {
		cancel()
		<-writersDone
	}()

	// Two readers, each checking the (txn, i, of) sequence as it goes: transaction 1's
	// events, then 2's, and so on, each whole and in order.
	type reader struct {
		c        *sqlite.LogCursor
		maxLimit int
		txn, i   int // the next event expected: event i of transaction txn
		of       int
		reads    int // reads that returned events while writers ran
		seen     map[string]bool
	}
	readers := []*reader{
		{c: logCursor(t, l, "a"), maxLimit: 7, txn: 1},
		{c: logCursor(t, l, "b"), maxLimit: 50, txn: 1},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	check := func(r *reader, e outbox.Event) error {
		var p struct{ Txn, I, Of int }
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return err
		}
		if r.seen[e.ID] {
			return fmt.Errorf("cursor %s read %s twice", r.c.Name(), e.ID)
		}
		r.seen[e.ID] = true
		if r.i == r.of && r.of > 0 { // the previous transaction is complete
			r.txn, r.i, r.of = r.txn+1, 0, 0
		}
		if p.Txn != r.txn || p.I != r.i || (r.of > 0 && p.Of != r.of) {
			return fmt.Errorf("cursor %s read event %d of %d of transaction %d (seq %d), want event %d of transaction %d",
				r.c.Name(), p.I, p.Of, p.Txn, e.Seq, r.i, r.txn)
		}
		r.i, r.of = r.i+1, p.Of
		return nil
	}
	for _, r := range readers {
		r.seen = map[string]bool{}
	}
	for idle := 0; idle < 2; {
		stillWriting := writing.Load()
		got := 0
		for _, r := range readers {
			b, err := r.c.Read(ctx, 1+rng.IntN(r.maxLimit))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range b.Events {
				if err := check(r, e); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.c.Ack(ctx, b); err != nil {
				t.Fatal(err)
			}
			if stillWriting && len(b.Events) > 0 {
				r.reads++
			}
			got += len(b.Events)
		}
		if _, err := l.Trim(ctx, 1+rng.IntN(20)); err != nil {
			t.Fatal(err)
		}
		if !stillWriting && got == 0 {
			idle++ // two empty rounds after the writers ended: all read
		}
	}
	close(writerErrs)
	for err := range writerErrs {
		if err != nil {
			t.Fatal(err)
		}
	}

	var last int
	if err := db.QueryRowContext(ctx, `SELECT n FROM log_commits`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range readers {
		if r.txn != last || r.i != r.of {
			t.Errorf("cursor %s stopped at event %d of %d of transaction %d; %d transactions committed", r.c.Name(), r.i, r.of, r.txn, last)
		}
		if len(r.seen) != len(committed) {
			t.Errorf("cursor %s read %d events, %d committed", r.c.Name(), len(r.seen), len(committed))
		}
		for id := range committed {
			if !r.seen[id] {
				t.Errorf("cursor %s skipped committed event %s", r.c.Name(), id)
			}
		}
		for id := range rolledBack {
			if r.seen[id] {
				t.Errorf("cursor %s read rolled-back event %s", r.c.Name(), id)
			}
		}
		if r.reads < 10 {
			t.Errorf("cursor %s read only %d batches while the writers ran: the test did not interleave", r.c.Name(), r.reads)
		}
	}
	if txns[true] != last {
		t.Errorf("%d transactions reported committed, the counter says %d", txns[true], last)
	}
	reused := 0
	seqs := map[int64]bool{}
	for _, seq := range committed {
		seqs[seq] = true
	}
	for _, seq := range rolledBack {
		if seqs[seq] {
			reused++
		}
	}
	if len(rolledBack) >= 2 && reused == 0 {
		t.Errorf("no rolled-back rowid was given to a later commit; the test did not exercise rowid reuse")
	}
	t.Logf("%d transactions committed (%d events; %d by deferred writers), %d rolled back or refused (%d events, %d of their rowids reused by later commits); reads while writing: a %d, b %d",
		txns[true], len(committed), deferredCommits.Load(), txns[false], len(rolledBack), reused, readers[0].reads, readers[1].reads)
}

func TestLogTrim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l, _ := newTestLog(t)
	appendCommitted(t, db, l, logEvents(10, "e")...)
	trim := func(limit int) int {
		t.Helper()
		n, err := l.Trim(ctx, limit)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := trim(100); n != 0 {
		t.Fatalf("Trim with no cursor deleted %d", n)
	}
	a, b := logCursor(t, l, "a"), logCursor(t, l, "b")
	for _, c := range []*sqlite.LogCursor{a, b} {
		if err := c.Ack(ctx, readLog(t, c, 10)); err != nil {
			t.Fatal(err)
		}
	}
	// a stands at 10; b goes back to 6 (set by hand, as if it had read less).
	if _, err := db.ExecContext(ctx, `UPDATE outbox_log_cursors SET after_seq = 6 WHERE name = 'b'`); err != nil {
		t.Fatal(err)
	}
	if n := trim(3); n != 3 {
		t.Fatalf("Trim(3) deleted %d", n)
	}
	if n := trim(100); n != 2 {
		t.Fatalf("Trim below b's position deleted %d, want 2 (seqs 4, 5)", n)
	}
	if _, err := db.ExecContext(ctx, `UPDATE outbox_log_cursors SET after_seq = 10 WHERE name = 'b'`); err != nil {
		t.Fatal(err)
	}
	if n := trim(100); n != 4 {
		t.Fatalf("Trim deleted %d, want 4 (seqs 6-9; 10, the cursors' position, stays)", n)
	}
	var lo, hi int64
	if err := db.QueryRowContext(ctx, `SELECT min(seq), max(seq) FROM outbox_log`).Scan(&lo, &hi); err != nil || lo != 10 || hi != 10 {
		t.Fatalf("log holds seqs %d-%d (%v), want 10 alone", lo, hi, err)
	}
	// The kept row holds the rowid up: the next event is 11, which the cursors read.
	next := outbox.NewEvent("t", "next", "u")
	appendCommitted(t, db, l, next)
	if next.Seq != 11 {
		t.Fatalf("appended after a trim at seq %d, want 11", next.Seq)
	}
	if got := entities(readLog(t, a, 10).Events); !slices.Equal(got, []string{"next"}) {
		t.Fatalf("read %v after the trim", got)
	}
	if _, err := l.Trim(ctx, 0); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("Trim(0) = %v, want ErrInvalid", err)
	}

	// What Trim avoids: delete every row by hand, and rowids start again below the
	// cursors. The cursor says so instead of skipping.
	if _, err := db.ExecContext(ctx, `DELETE FROM outbox_log`); err != nil {
		t.Fatal(err)
	}
	reused := outbox.NewEvent("t", "reused", "u")
	appendCommitted(t, db, l, reused)
	if reused.Seq != 1 {
		t.Fatalf("after deleting everything, appended at seq %d; SQLite gives 1", reused.Seq)
	}
	if _, err := b.Read(ctx, 10); !errors.Is(err, sqlite.ErrLogRewound) {
		t.Fatalf("Read of a rewound log = %v, want ErrLogRewound", err)
	}
}

// TestLogStatementsUseThePrimaryKey: the read and the trim are ranges of the rowid.
// TestLogPeekListsOnlyCommittedEvents: Peek lists the events the cursor has not
// passed, not those of a transaction still open, and makes no cursor row.
func TestLogPeekListsOnlyCommittedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l, _ := newTestLog(t)
	peek := func(step, cursor string, want ...string) {
		t.Helper()
		events, err := l.Peek(ctx, cursor, 10)
		if got := entities(events); err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: peek %q: %v (%v), want %v", step, cursor, got, err, want)
		}
	}
	appendCommitted(t, db, l, logEvents(3, "a")...)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := l.AppendTx(ctx, tx, logEvents(1, "open")...); err != nil {
		t.Fatal(err)
	}
	peek("three committed, one open", "relay", "a-0", "a-1", "a-2")
	var cursors int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM outbox_log_cursors`).Scan(&cursors); err != nil || cursors != 0 {
		t.Fatalf("%d cursor rows after a peek (%v), want 0", cursors, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	c := logCursor(t, l, "relay")
	if err := c.Ack(ctx, readLog(t, c, 2)); err != nil {
		t.Fatal(err)
	}
	peek("two read, the open one committed", "relay", "a-2", "open-0")
}

func TestLogStatementsUseThePrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _, _ := newTestLog(t)
	for _, q := range []struct {
		name, query, want string
		args              []any
	}{
		{"read", sqlite.ReadLogQuery, "SEARCH outbox_log USING INTEGER PRIMARY KEY (rowid>?)", []any{0, 100}},
		{"peek", sqlite.PeekLogQuery, "SEARCH outbox_log USING INTEGER PRIMARY KEY (rowid>?)", []any{"relay", 100}},
		{"trim", sqlite.TrimLogQuery, "SEARCH outbox_log USING INTEGER PRIMARY KEY (rowid<?)", []any{sql.Named("limit", 100)}},
	} {
		rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.query, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if !slices.Contains(plan, q.want) || slices.ContainsFunc(plan, func(s string) bool {
			return strings.HasPrefix(s, "SCAN outbox_log") || strings.Contains(s, "TEMP B-TREE")
		}) {
			t.Errorf("%s plan %q, want %q and no scan or sort", q.name, plan, q.want)
		}
	}
}

// TestLogRetentionKeepsTheFileFlat runs ten cycles of appending N events (in
// transactions of 100), reading them all through a cursor and trimming: the database
// file after the tenth is within 1.2× of after the first, because the pages trimmed
// go to the freelist and the next cycle's appends reuse them. N is 10,000 here (1,000
// under the race detector);
// OUTBOX_LOG_RETENTION_EVENTS=100000 runs the size (docs/log-layout.md).
func TestLogRetentionKeepsTheFileFlat(t *testing.T) {
	t.Parallel()
	n := 10_000
	if raceEnabled {
		n = 1_000 // the race detector slows modernc.org/sqlite tenfold
	}
	if s := os.Getenv("OUTBOX_LOG_RETENTION_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("OUTBOX_LOG_RETENTION_EVENTS=%q: want a number of at least 100", s)
		}
	}
	ctx := context.Background()
	db, l, path := newTestLog(t)
	c := logCursor(t, l, "relay")
	payload := json.RawMessage(`{"kind":"weight","quantity":72.5,"unit":"kg"}`)
	size := func() (file, pages, free int64) {
		t.Helper()
		var busy, log, done int
		if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done); err != nil || busy != 0 {
			t.Fatalf("checkpoint: busy %d, %v", busy, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `SELECT (SELECT page_count FROM pragma_page_count), (SELECT freelist_count FROM pragma_freelist_count)`).Scan(&pages, &free); err != nil {
			t.Fatal(err)
		}
		return fi.Size(), pages, free
	}
	var first int64
	for cycle := 1; cycle <= 10; cycle++ {
		started := time.Now()
		for start := 0; start < n; start += 100 {
			batch := make([]*outbox.Event, min(100, n-start))
			for i := range batch {
				e := outbox.NewEvent("order.created", fmt.Sprintf("c%d-e%d", cycle, start+i), "user-1")
				e.OrderingKey, e.Payload = e.EntityID, payload
				batch[i] = e
			}
			appendCommitted(t, db, l, batch...)
		}
		appended := time.Since(started)
		started = time.Now()
		for read := 0; read < n; {
			b := readLog(t, c, 1000)
			if len(b.Events) == 0 {
				t.Fatalf("cycle %d: read %d of %d, then nothing", cycle, read, n)
			}
			if err := c.Ack(ctx, b); err != nil {
				t.Fatal(err)
			}
			read += len(b.Events)
		}
		readTime := time.Since(started)
		started = time.Now()
		trimmed := 0
		for {
			k, err := l.Trim(ctx, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			trimmed += k
			if k < 10_000 {
				break
			}
		}
		// Everything but the row at the cursor's position, which stays (log.go says why);
		// after the first cycle, that row of the cycle before goes too.
		want := n
		if cycle == 1 {
			want = n - 1
		}
		if trimmed != want {
			t.Fatalf("cycle %d trimmed %d, want %d", cycle, trimmed, want)
		}
		trimTime := time.Since(started)
		file, pages, free := size()
		if cycle == 1 {
			first = file
		}
		t.Logf("cycle %2d: file %6.2f MB (%d pages, %d free); append %v, read %v, trim %v",
			cycle, float64(file)/1e6, pages, free, appended.Round(time.Millisecond), readTime.Round(time.Millisecond), trimTime.Round(time.Millisecond))
		if float64(file) > 1.2*float64(first) {
			t.Fatalf("cycle %d: file %d bytes, over 1.2× the first cycle's %d", cycle, file, first)
		}
	}
}
