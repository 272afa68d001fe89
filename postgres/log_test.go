package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The log cursor's tests (issue 24). Each runs in a schema of its own, and commits
// transactions in an order it chooses, so that what a read may return is known
// exactly: the cursor's promise is that every committed event is read once, whatever
// the order of commits, and that nothing waits for a transaction left open.

// newTestLog returns a migrated log in a fresh schema of pool (the shared one when nil).
func newTestLog(t testing.TB, pool *pgxpool.Pool) *postgres.Log {
	t.Helper()
	if pool == nil {
		pool = sharedPool(t)
	}
	return openLog(t, pool, postgres.LogConfig{Schema: freshSchema(t, pool)})
}

func logCursor(t testing.TB, l *postgres.Log, name string) *postgres.LogCursor {
	t.Helper()
	c, err := l.Cursor(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// beginTx starts a transaction that the test ends; it is rolled back at cleanup if the
// test did not.
func beginTx(t testing.TB, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// appendInTx appends one event per entity in tx and returns their IDs.
func appendInTx(t testing.TB, l *postgres.Log, tx pgx.Tx, entities ...string) []string {
	t.Helper()
	events := make([]*outbox.Event, len(entities))
	for i, entity := range entities {
		events[i] = outbox.NewEvent("order.created", entity, "user-1")
	}
	if err := l.AppendTx(context.Background(), tx, events...); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

func commitTx(t testing.TB, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// appendCommitted appends one event per entity in a transaction of its own.
func appendCommitted(t testing.TB, l *postgres.Log, pool *pgxpool.Pool, entities ...string) []string {
	t.Helper()
	tx := beginTx(t, pool)
	ids := appendInTx(t, l, tx, entities...)
	commitTx(t, tx)
	return ids
}

// readAckLog reads one batch and acknowledges it, returning the events' entity IDs.
func readAckLog(t testing.TB, c *postgres.LogCursor, limit int) []string {
	t.Helper()
	ctx := context.Background()
	b, err := c.Read(ctx, limit)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(ctx, b); err != nil {
		t.Fatal(err)
	}
	return logEntities(b.Events)
}

func logEntities(events []postgres.LogEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EntityID
	}
	return out
}

// drainLog reads and acknowledges batches of limit until one is empty.
func drainLog(t testing.TB, c *postgres.LogCursor, limit int) []postgres.LogEvent {
	t.Helper()
	ctx := context.Background()
	var all []postgres.LogEvent
	for {
		b, err := c.Read(ctx, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) > limit {
			t.Fatalf("read %d events with limit %d", len(b.Events), limit)
		}
		if err := c.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		if len(b.Events) == 0 {
			return all
		}
		all = append(all, b.Events...)
	}
}

func entityNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// checkReadOnce fails unless got holds every entity of want exactly once, and nothing else.
func checkReadOnce(t testing.TB, got []postgres.LogEvent, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, e := range got {
		seen[e.EntityID]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("%s read %d times, want once", w, seen[w])
		}
		delete(seen, w)
	}
	for e, n := range seen {
		t.Errorf("%s read %d times, want none here", e, n)
	}
}

func TestLogMigrateCreatesOnlyItsOwnTables(t *testing.T) {
	pool := sharedPool(t)
	ctx := context.Background()
	cfg := postgres.LogConfig{Schema: freshSchema(t, pool)}
	if _, err := postgres.NewLog(ctx, pool, cfg); !errors.Is(err, postgres.ErrNotMigrated) {
		t.Fatalf("NewLog before MigrateLog: %v, want ErrNotMigrated", err)
	}
	// The table layout in the same schema first: the log's migrations leave it be.
	if _, err := postgres.Migrate(ctx, pool, postgres.Config{Schema: cfg.Schema}); err != nil {
		t.Fatal(err)
	}
	tables := `SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE nspname = $1 AND relkind IN ('r', 'i', 'p', 'I') ORDER BY 1`
	rows, _ := pool.Query(ctx, tables, cfg.Schema)
	before, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	applied, err := postgres.MigrateLog(ctx, pool, cfg)
	var all []int
	for v := 1; v <= postgres.LogSchemaVersion; v++ {
		all = append(all, v)
	}
	if err != nil || !slices.Equal(applied, all) {
		t.Fatalf("MigrateLog = %v, %v; want %v", applied, err, all)
	}
	applied, err = postgres.MigrateLog(ctx, pool, cfg)
	if err != nil || len(applied) != 0 {
		t.Fatalf("MigrateLog again = %v, %v; want nothing to do", applied, err)
	}
	rows, _ = pool.Query(ctx, tables, cfg.Schema)
	after, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, r := range after {
		if !slices.Contains(before, r) {
			added = append(added, r)
		}
	}
	want := []string{"outbox_log", "outbox_log_cursors", "outbox_log_cursors_pkey",
		"outbox_log_delivered", "outbox_log_delivered_pkey",
		"outbox_log_schema_migrations", "outbox_log_schema_migrations_pkey"}
	for i := range postgres.DefaultLogPartitions {
		want = append(want, fmt.Sprintf("outbox_log_p%02d", i), fmt.Sprintf("outbox_log_p%02d_pkey", i))
	}
	slices.Sort(added)
	slices.Sort(want)
	if !slices.Equal(added, want) {
		t.Errorf("MigrateLog created %v, want %v (one index on each partition of the log: its primary key)", added, want)
	}
	// And the shard functions (log_shard.go), for writers in other languages.
	rows, _ = pool.Query(ctx, `SELECT proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE nspname = $1 ORDER BY 1`, cfg.Schema)
	funcs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(funcs, []string{"outbox_log_shard", "outbox_log_shards"}) {
		t.Errorf("MigrateLog created the functions %v, want [outbox_log_shard outbox_log_shards]", funcs)
	}
	if _, err := postgres.NewLog(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	var fe *outbox.FieldError
	if err := (postgres.LogConfig{Table: "bad-name"}).Validate(); !errors.As(err, &fe) || fe.Field != "postgres.LogConfig.Table" {
		t.Errorf("Validate of a bad table name = %v, want a FieldError on postgres.LogConfig.Table", err)
	}
}

func TestLogAppendTxReadsBackWhatWasWritten(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	ctx := context.Background()
	one := outbox.NewEvent("order.created", "order-1", "user-1")
	one.OrderingKey, one.Payload, one.Metadata = "order-1", []byte(`{"b": 1, "a": [2]}`), map[string]string{"source": "app"}
	one.MaxAttempts, one.Priority, one.IsNewRecord = 3, 10, true
	batch := []*outbox.Event{outbox.NewEvent("order.paid", "order-1", "user-1"), outbox.NewEvent("order.shipped", "order-1", "")}
	batch[1].Payload = []byte(`"text"`)
	tx := beginTx(t, pool)
	if err := l.AppendTx(ctx, tx, one); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendTx(ctx, tx, batch...); err != nil {
		t.Fatal(err)
	}
	// An invalid event fails the whole call, and writes nothing of it.
	bad := []*outbox.Event{outbox.NewEvent("order.paid", "order-2", "user-1"), outbox.NewEvent("", "order-2", "user-1")}
	if err := l.AppendTx(ctx, tx, bad...); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("AppendTx of an event without a type: %v, want ErrInvalid", err)
	}
	// So does a batch in which two events share an ID.
	twins := []*outbox.Event{outbox.NewEvent("order.paid", "order-3", "user-1"), outbox.NewEvent("order.paid", "order-3", "user-1")}
	twins[0].ID = "0190a0a0-0000-7000-8000-000000000001"
	twins[1].ID = twins[0].ID
	var fe *outbox.FieldError
	if err := l.AppendTx(ctx, tx, twins...); !errors.As(err, &fe) || fe.Field != "ID" {
		t.Fatalf("AppendTx of a batch with one ID twice: %v, want a FieldError on ID", err)
	}
	commitTx(t, tx)
	if one.Seq != 0 || batch[0].Seq != 0 {
		t.Errorf("AppendTx filled Seq (%d, %d): the log does not ask for it back", one.Seq, batch[0].Seq)
	}
	got := drainLog(t, logCursor(t, l, "r"), 10)
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	if !(got[0].Seq < got[1].Seq && got[1].Seq < got[2].Seq) {
		t.Errorf("seqs %d, %d, %d: want the order appended", got[0].Seq, got[1].Seq, got[2].Seq)
	}
	for i, want := range append([]*outbox.Event{one}, batch...) {
		e := got[i]
		if e.XID != got[0].XID || e.XID == 0 {
			t.Errorf("event %d: xid %d, want the transaction's (%d)", i, e.XID, got[0].XID)
		}
		if e.ID != want.ID || e.Type != want.Type || e.EntityID != want.EntityID ||
			e.UserID != want.UserID || e.OrderingKey != want.OrderingKey || string(e.Payload) != string(want.Payload) ||
			!maps.Equal(e.Metadata, want.Metadata) || e.MaxAttempts != want.MaxAttempts || e.Priority != want.Priority ||
			e.IsNewRecord != want.IsNewRecord || !e.CreatedAt.Equal(want.CreatedAt) || e.Status != outbox.StatusPending {
			t.Errorf("event %d read back as %+v, want %+v", i, e.Event, *want)
		}
	}
}

// TestLogCursorOutOfOrderCommits: T1 writes first and commits last. A reader by
// sequence or by xid order would pass T1's place while it is open and never come
// back; the cursor delivers T2 at once and T1 when it commits.
func TestLogCursorOutOfOrderCommits(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")

	t1 := beginTx(t, pool)
	appendInTx(t, l, t1, "t1-a", "t1-b") // T1 takes the lower xid and seqs
	t2 := beginTx(t, pool)
	appendInTx(t, l, t2, "t2-a")
	commitTx(t, t2)

	if got := readAckLog(t, c, 100); !slices.Equal(got, []string{"t2-a"}) {
		t.Fatalf("read 1 = %v, want [t2-a]: T1 is still open", got)
	}
	commitTx(t, t1)
	if got := readAckLog(t, c, 100); !slices.Equal(got, []string{"t1-a", "t1-b"}) {
		t.Fatalf("read 2 = %v, want [t1-a t1-b]: T1 committed after read 1", got)
	}
	if got := readAckLog(t, c, 100); len(got) != 0 {
		t.Fatalf("read 3 = %v, want nothing", got)
	}
	// A reader starting now, from the beginning, reads both once.
	checkReadOnce(t, drainLog(t, logCursor(t, l, "late"), 100), []string{"t1-a", "t1-b", "t2-a"})
}

// TestLogCursorLongTransaction holds one transaction open across many reads and
// commits ("minutes" of traffic, counted in reads, not seconds): every other commit
// is read by the next read, none waits for the open one, and the open one's events,
// some written early and some late, are read once when it commits.
func TestLogCursorLongTransaction(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")

	long := beginTx(t, pool)
	appendInTx(t, l, long, "long-0")
	const rounds = 200
	for i := range rounds {
		if i == rounds/2 {
			appendInTx(t, l, long, "long-1") // it goes on writing meanwhile
		}
		entity := fmt.Sprintf("short-%d", i)
		appendCommitted(t, l, pool, entity)
		if got := readAckLog(t, c, 10); !slices.Equal(got, []string{entity}) {
			t.Fatalf("read %d = %v, want [%s] at once, past the open transaction", i, got, entity)
		}
	}
	commitTx(t, long)
	if got := readAckLog(t, c, 10); !slices.Equal(got, []string{"long-0", "long-1"}) {
		t.Fatalf("read after the long transaction committed = %v, want [long-0 long-1]", got)
	}
	if got := readAckLog(t, c, 10); len(got) != 0 {
		t.Fatalf("then %v, want nothing", got)
	}
}

// TestLogCursorRollback: a rolled back transaction, or savepoint, delivers nothing;
// a released savepoint's events go with their transaction, under its xid.
func TestLogCursorRollback(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")
	ctx := context.Background()

	gone := beginTx(t, pool)
	appendInTx(t, l, gone, "rolled-back")
	if err := gone.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	tx := beginTx(t, pool)
	appendInTx(t, l, tx, "outer")
	sp, err := tx.Begin(ctx) // SAVEPOINT
	if err != nil {
		t.Fatal(err)
	}
	appendInTx(t, l, sp, "savepoint-undone")
	if err := sp.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	sp, err = tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	appendInTx(t, l, sp, "savepoint-kept")
	if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
		t.Fatal(err)
	}
	commitTx(t, tx)

	b, err := c.Read(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := logEntities(b.Events); !slices.Equal(got, []string{"outer", "savepoint-kept"}) {
		t.Fatalf("read %v, want [outer savepoint-kept]", got)
	}
	if b.Events[0].XID != b.Events[1].XID {
		t.Errorf("a savepoint's event has xid %d, its transaction %d: want the top-level xid", b.Events[1].XID, b.Events[0].XID)
	}
	if err := c.Ack(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := readAckLog(t, c, 10); len(got) != 0 {
		t.Fatalf("then %v, want nothing", got)
	}
}

// TestLogCursorCrashRereads: a reader that dies between reading and acknowledging
// leaves the position where it was; the next reader of the name, in another process
// (another pool), reads the same events, and after its acknowledgement nothing of
// them again.
func TestLogCursorCrashRereads(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	ctx := context.Background()
	appendCommitted(t, l, pool, "a", "b")
	appendCommitted(t, l, pool, "c")

	first := logCursor(t, l, "relay")
	b, err := first.Read(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := logEntities(b.Events); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("read %v, want [a b]", got)
	}
	// The reader crashes here: no Ack. Its successor opens the log afresh.
	other := newPool(t, 2, "")
	l2, err := postgres.NewLog(ctx, other, l.Config())
	if err != nil {
		t.Fatal(err)
	}
	second := logCursor(t, l2, "relay")
	if got := readAckLog(t, second, 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after the crash read %v, want the unacknowledged [a b] again", got)
	}
	appendCommitted(t, l, pool, "d")
	if got := drainLog(t, second, 2); !slices.Equal(logEntities(got), []string{"c", "d"}) {
		t.Fatalf("then read %v, want [c d]", logEntities(got))
	}
	// The dead reader's batch, acknowledged late (a reader that was only paused), is
	// refused: the position moved past it.
	if err := first.Ack(ctx, b); !errors.Is(err, postgres.ErrLogCursorMoved) {
		t.Fatalf("stale Ack = %v, want ErrLogCursorMoved", err)
	}
	if got := readAckLog(t, first, 10); len(got) != 0 {
		t.Fatalf("the stale reader, reloaded, read %v, want nothing", got)
	}
}

// TestLogCursorLimitSplits reads a pair of snapshots holding far more events than the
// limit: it goes in parts, in (xid, seq) order, nothing skipped or repeated, and what
// commits while the pair is being read (including a transaction that was open when
// the pair began) waits for the next pair.
func TestLogCursorLimitSplits(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")

	open := beginTx(t, pool)
	appendInTx(t, l, open, "open")
	appendCommitted(t, l, pool, entityNames("big", 1000)...)
	for i := range 20 {
		appendCommitted(t, l, pool, fmt.Sprintf("small-%d", i))
	}
	// A transaction whose xid is above every one of the pair, and below the pair's
	// later snapshot's xmax (a later transaction completes before it): while it is
	// open it is in that snapshot's running list, and when it commits mid-pair only
	// that list, not the reading statement's own snapshot, keeps it out of the pair.
	openLate := beginTx(t, pool)
	appendInTx(t, l, openLate, "open-late")
	appendCommitted(t, l, pool, "tail")
	first := slices.Concat(entityNames("big", 1000), entityNames("small", 20), []string{"tail"})

	const limit = 7
	var got []postgres.LogEvent
	var later []string
	for i := 0; ; i++ {
		b, err := c.Read(context.Background(), limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) > limit {
			t.Fatalf("read %d events, limit %d", len(b.Events), limit)
		}
		if err := c.Ack(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b.Events...)
		if len(got) >= len(first) {
			break
		}
		switch i {
		case 3:
			commitTx(t, open)
			later = append(later, "open")
		case 5:
			commitTx(t, openLate)
			later = append(later, "open-late")
		case 10, 50, 100:
			e := fmt.Sprintf("during-%d", i)
			appendCommitted(t, l, pool, e)
			later = append(later, e)
		}
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if a.XID > b.XID || a.XID == b.XID && a.Seq >= b.Seq {
			t.Fatalf("event %d (%d, %d) read after (%d, %d): a pair is read in (xid, seq) order", i, b.XID, b.Seq, a.XID, a.Seq)
		}
	}
	checkReadOnce(t, got, first)
	rest := drainLog(t, c, limit)
	checkReadOnce(t, rest, later)
}

// TestLogCursorConcurrentWriters: 8 writers, 500 committed events each, in
// transactions of 1 to 5 events held open for a random while (so that they overlap
// and commit out of the order they began), one in ten rolled back; a reader reads
// and acknowledges meanwhile. Every committed event is read exactly once, no rolled
// back one is, and each writer's events come in the order it committed them (a
// writer's transaction commits before its next one begins).
func TestLogCursorConcurrentWriters(t *testing.T) {
	const writers, perWriter = 8, 500
	pool := newPool(t, writers+2, "")
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	committed := make([][]string, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(24, uint64(w)))
			n, attempt := 0, 0
			for n < perWriter {
				attempt++
				size := min(1+rng.IntN(5), perWriter-n)
				rollback := rng.IntN(10) == 0
				events := make([]*outbox.Event, size)
				for i := range events {
					events[i] = outbox.NewEvent("order.created", fmt.Sprintf("w%d-t%d-%d", w, attempt, i), "user-1")
				}
				err := func() error {
					tx, err := pool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(context.WithoutCancel(ctx))
					if err := l.AppendTx(ctx, tx, events...); err != nil {
						return err
					}
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
					if rollback {
						return tx.Rollback(ctx)
					}
					return tx.Commit(ctx)
				}()
				if err != nil {
					errs <- err
					return
				}
				if !rollback {
					for _, e := range events {
						committed[w] = append(committed[w], e.EntityID)
					}
					n += size
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var got []postgres.LogEvent
	reads := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true // one more drain below, after the last commit
		default:
		}
		b, err := c.Read(ctx, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b.Events...)
		reads++
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got = append(got, drainLog(t, c, 64)...)

	checkReadOnce(t, got, slices.Concat(committed...))
	for w := range writers {
		var order []string
		prefix := fmt.Sprintf("w%d-", w)
		for _, e := range got {
			if len(e.EntityID) > len(prefix) && e.EntityID[:len(prefix)] == prefix {
				order = append(order, e.EntityID)
			}
		}
		if !slices.Equal(order, committed[w]) {
			t.Errorf("writer %d's events read out of its commit order", w)
		}
	}
	t.Logf("%d events read in %d reads while written", len(got), reads)
}

// TestLogCursorNamesAreIndependent: two cursors of different names each read
// everything; an empty read moves nothing and writes nothing.
func TestLogCursorNamesAreIndependent(t *testing.T) {
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	ctx := context.Background()
	a, b := logCursor(t, l, "a"), logCursor(t, l, "b")
	appendCommitted(t, l, pool, "x", "y")
	if got := readAckLog(t, a, 10); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("a read %v", got)
	}
	empty, err := a.Read(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(empty.Events) != 0 {
		t.Fatalf("a read %v again", logEntities(empty.Events))
	}
	if err := a.Ack(ctx, empty); err != nil {
		t.Fatal(err)
	}
	if got := readAckLog(t, b, 1); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("b read %v, want [x]", got)
	}
	if got := readAckLog(t, b, 1); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("b read %v, want [y]", got)
	}
	if _, err := a.Read(ctx, 0); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("Read with limit 0 = %v, want ErrInvalid", err)
	}
}

// TestLogReadUsesThePrimaryKey: the cursor's read is two ranges of the primary key
// merged in order, whatever the position and whether its plan is made for the values
// or generic, so that it costs the events it returns and not the size of the log: no
// sequential scan, no sort of the candidates. The log is filled as a busy one would
// be, by many transactions (their xids written directly, below every real one). Its
// partitions are 4,096 xids wide, so that the rows fill most of them and leave some
// empty, as the ring is when Retain has emptied the partitions behind the cursors:
// each range is then a merge of every partition's primary key. On a log of one shard
// and of eight, where each range is prefixed by the shard (the primary key is
// (shard, xid, seq)), read in the first shard, a middle one and the last.
func TestLogReadUsesThePrimaryKey(t *testing.T) {
	for _, shards := range []int{1, 8} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			t.Parallel()
			testLogReadUsesThePrimaryKey(t, shards)
		})
	}
}

func testLogReadUsesThePrimaryKey(t *testing.T, shards int) {
	pool := sharedPool(t)
	ctx := context.Background()
	cfg := postgres.LogConfig{Schema: freshSchema(t, pool), PartitionXIDs: 4096, Shards: shards}
	if _, err := postgres.MigrateLog(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := postgres.NewLog(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	table := pgx.Identifier{l.Config().Schema, l.Config().Table}.Sanitize()
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (xid, created_at, id, type, entity_id, shard)
		SELECT (3 + i / 2)::text::xid8, now(), gen_random_uuid(), 'order.created', 'e-' || i, i % $1
		FROM generate_series(1, 100000) AS i`, shards); err != nil {
		t.Fatal(err)
	}
	open := beginTx(t, pool)
	appendInTx(t, l, open, "open")
	if _, err := pool.Exec(ctx, `ANALYZE `+table); err != nil {
		t.Fatal(err)
	}
	var snapshot string
	if err := pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	for _, read := range []struct {
		name, prev, next, afterXID string
	}{
		{"first read", "1:1:", "", "0"},
		{"a pair going on", "1:1:", snapshot, "1000"},
		{"past a running transaction", snapshot, "", "0"},
	} {
		for _, shard := range slices.Compact([]int{0, shards / 2, shards - 1}) {
			for _, generic := range []bool{false, true} {
				plan, err := l.ExplainRead(ctx, generic, shard, read.prev, read.next, read.afterXID, 0, 1001)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(plan, "Seq Scan") || sortsMoreThanTheProbes(plan) || strings.Contains(plan, "Bitmap") ||
					strings.Count(plan, "Index Scan using outbox_log_p") != 2*l.Config().Partitions || !strings.Contains(plan, "Merge Append") ||
					strings.Count(plan, "Index Cond: ((shard = ") != 2*l.Config().Partitions {
					t.Errorf("%s in shard %d (generic plan: %t): plan\n%s\nwant two index scans of each partition's primary key, within the shard, merged", read.name, shard, generic, plan)
				}
			}
		}
	}
	commitTx(t, open)
}

// sortsMoreThanTheProbes reports whether plan sorts anything but the rows of the
// running transactions' probes (a Nested Loop over their xids, each probe limited):
// that sort is bounded by the limit times the running transactions; any other would
// sort what the ranges found, which grows with the log.
func sortsMoreThanTheProbes(plan string) bool {
	lines := strings.Split(plan, "\n")
	for i, line := range lines {
		if !strings.Contains(line, "->  Sort") {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.Contains(lines[j], "Sort Key:") {
			j++
		}
		if j == len(lines) || !strings.Contains(lines[j], "->  Nested Loop") {
			return true
		}
	}
	return false
}
