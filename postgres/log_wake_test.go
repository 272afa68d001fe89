package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// The log relay's wake-ups (log_wake.go). These tests live inside the package, to reach
// the head poll and the relay's read-only idle path; they set up their own log and
// events table in a schema of their own, as the external tests do.

// wakeDeadline bounds the wait for an outcome that comes at once when the wake-up path
// works. The relays under test poll the log only once an hour, so an outcome that
// needed that poll would miss it by far; the bound itself is no performance claim.
const wakeDeadline = time.Minute

// wakeEnv is a log and an events table in a fresh schema, on a pool of their own.
type wakeEnv struct {
	pool  *pgxpool.Pool
	log   *Log
	store *Store
}

func wakeDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping a PostgreSQL test (.ci/run sets it, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return dsn
}

// wakePool opens a pool of its own on the test database, closed when t ends;
// configure, when not nil, adjusts its config.
func wakePool(t *testing.T, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(wakeDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 6
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newWakeEnv makes a wakeEnv on a pool of its own; configure, when not nil, adjusts
// the pool's config.
func newWakeEnv(t *testing.T, configure func(*pgxpool.Config)) wakeEnv {
	t.Helper()
	return newShardedWakeEnv(t, configure, 0)
}

// newShardedWakeEnv is newWakeEnv on a log of the given shards (0: the default).
func newShardedWakeEnv(t *testing.T, configure func(*pgxpool.Config), shards int) wakeEnv {
	t.Helper()
	ctx := context.Background()
	dsn := wakeDSN(t)
	pool := wakePool(t, configure)
	schema := fmt.Sprintf("outbox_test_wake_%x", rand.Uint64())
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	storeCfg := Config{Schema: schema, DisableListen: true, Logger: outboxtest.Discard}
	if _, err := Migrate(ctx, pool, storeCfg); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, pool, storeCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	logCfg := LogConfig{Schema: schema, Shards: shards}
	if _, err := MigrateLog(ctx, pool, logCfg); err != nil {
		t.Fatal(err)
	}
	l, err := NewLog(ctx, pool, logCfg)
	if err != nil {
		t.Fatal(err)
	}
	return wakeEnv{pool: pool, log: l, store: s}
}

func (env wakeEnv) relay(t *testing.T, h outbox.Handler, cfg LogRelayConfig) *LogRelay {
	t.Helper()
	cfg.Logger = outboxtest.Discard
	r, err := NewLogRelay(context.Background(), env.log, env.store, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// appendIn appends one event per entity in tx.
func (env wakeEnv) appendIn(t *testing.T, tx pgx.Tx, entities ...string) {
	t.Helper()
	for _, entity := range entities {
		if err := env.log.AppendTx(context.Background(), tx, outbox.NewEvent("order.created", entity, "user-1")); err != nil {
			t.Fatal(err)
		}
	}
}

func (env wakeEnv) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := env.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

func wakeCommit(t *testing.T, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// wakeReceiver records the entities it was handed and signals each delivery.
type wakeReceiver struct {
	mu     sync.Mutex
	got    []string
	signal chan struct{}
}

func newWakeReceiver() *wakeReceiver { return &wakeReceiver{signal: make(chan struct{}, 1)} }

func (w *wakeReceiver) Handle(_ context.Context, e outbox.Event) error {
	w.mu.Lock()
	w.got = append(w.got, e.EntityID)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
	return nil
}

func (w *wakeReceiver) entities() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// await waits until every one of entities has been delivered, or fails after
// wakeDeadline naming what is missing.
func (w *wakeReceiver) await(t *testing.T, why string, entities ...string) {
	t.Helper()
	deadline := time.NewTimer(wakeDeadline)
	defer deadline.Stop()
	for {
		got := w.entities()
		missing := slices.DeleteFunc(slices.Clone(entities), func(e string) bool { return slices.Contains(got, e) })
		if len(missing) == 0 {
			return
		}
		select {
		case <-w.signal:
		case <-deadline.C:
			t.Fatalf("%s: %v not delivered within %s, with the relay's poll interval an hour (delivered: %v)", why, missing, wakeDeadline, got)
		}
	}
}

// runRelay runs r until the test ends, and fails the test if Run returns early.
func runRelay(t *testing.T, r *LogRelay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
}

// lookFrom asks the head poll whether the log has events past the position of r's
// cursor, on a log of one shard: every event visible in the position's snapshot has
// been read, so it serves as the look's base.
func lookFrom(ctx context.Context, head *logHead, r *LogRelay) (bool, error) {
	shards, _, err := head.look(ctx, r.shards[0].cursor.position().snapshot, 0)
	return len(shards) > 0, err
}

// scriptedHead answers the head poll's two statements from a script, and counts them.
type scriptedHead struct {
	snapshot  string // what logHeadSnapshot returns
	found     bool   // what logHeadNews returns (with snapshot)
	newsErr   error
	snapshots int
	news      []string // the positions news was asked about
}

func (s *scriptedHead) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	if sql == logHeadSnapshot {
		s.snapshots++
		return scriptedRow{values: []any{s.snapshot}}
	}
	prevs := args[0].([]string)
	for _, p := range prevs[1:] {
		if p != prevs[0] {
			s.newsErr = fmt.Errorf("the head poll gave its shards different snapshots: %v", prevs)
		}
	}
	s.news = append(s.news, prevs[0])
	if s.newsErr != nil {
		return scriptedRow{err: s.newsErr}
	}
	var shards []int16
	if s.found {
		shards = []int16{3}
	}
	return scriptedRow{values: []any{s.snapshot, shards}}
}

// SendBatch runs the look's batch: its transaction's statements succeed, and its
// statement in the log is answered as QueryRow answers it.
func (s *scriptedHead) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return &scriptedBatch{head: s, ctx: ctx, queued: b.QueuedQueries}
}

type scriptedBatch struct {
	head   *scriptedHead
	ctx    context.Context
	queued []*pgx.QueuedQuery
	next   int
	failed bool // a statement failed: the rest of the batch is not run
}

func (b *scriptedBatch) take() *pgx.QueuedQuery {
	q := b.queued[b.next]
	b.next++
	return q
}

func (b *scriptedBatch) Exec() (pgconn.CommandTag, error) {
	if b.failed {
		return pgconn.CommandTag{}, errors.New("an earlier statement of the batch failed")
	}
	switch q := b.take(); q.SQL {
	case lookBegin, genericPlanOnly, lookEnd:
		return pgconn.CommandTag{}, nil
	default:
		return pgconn.CommandTag{}, fmt.Errorf("unexpected statement %q", q.SQL)
	}
}

func (b *scriptedBatch) Query() (pgx.Rows, error) { return nil, errors.New("not scripted") }

func (b *scriptedBatch) QueryRow() pgx.Row {
	q := b.take()
	row := b.head.QueryRow(b.ctx, q.SQL, q.Arguments...)
	if r, ok := row.(scriptedRow); ok && r.err != nil {
		b.failed = true
	}
	return row
}

func (b *scriptedBatch) Close() error { return nil }

func (b *scriptedBatch) Tx() pgx.Tx { return nil }

type scriptedRow struct {
	values []any
	err    error
}

func (r scriptedRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	for i, d := range dest {
		switch d := d.(type) {
		case *string:
			*d = r.values[i].(string)
		case *[]int16:
			*d = r.values[i].([]int16)
		}
	}
	return nil
}

// The head poll skips the log only while the snapshot is the one at which it last
// found nothing from the same position: any finished transaction, or a moved cursor,
// makes it look in the log again. What the look says is what it returns.
func TestLogHeadLooksInTheLogOnlyAfterATransactionFinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := &scriptedHead{snapshot: "100:100:"}
	h := &logHead{q: q, news: "news", shards: []int16{0, 1, 2, 3}}
	at := logPosition{snapshot: "90:95:91"}
	step := func(name string, pos logPosition, wantFound bool, wantSnapshots, wantNews int) {
		t.Helper()
		shards, _, err := h.look(ctx, pos.snapshot, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		found := len(shards) > 0
		if found && !slices.Equal(shards, []int16{3}) {
			t.Fatalf("%s: found news in shards %v, want what the look in the log said, [3]", name, shards)
		}
		if found != wantFound || q.snapshots != wantSnapshots || len(q.news) != wantNews {
			t.Fatalf("%s: found %v after %d snapshot and %d log statements, want %v after %d and %d",
				name, found, q.snapshots, len(q.news), wantFound, wantSnapshots, wantNews)
		}
	}

	step("first look", at, false, 1, 1)
	if q.news[0] != at.snapshot {
		t.Fatalf("looked past %q, want the position's snapshot %q", q.news[0], at.snapshot)
	}
	step("nothing finished since", at, false, 2, 1)
	step("nothing finished since, again", at, false, 3, 1)

	q.snapshot = "100:101:" // a transaction finished
	step("a transaction finished, not in the log", at, false, 4, 2)
	if q.news[1] != "100:100:" {
		t.Fatalf("looked past %q, want the snapshot at which it last found nothing since the position, 100:100:", q.news[1])
	}
	step("nothing finished since that look", at, false, 5, 2)

	q.snapshot, q.found = "100:102:", true
	step("a transaction finished, with events", at, true, 6, 3)
	step("the same snapshot, not yet read", at, true, 7, 4) // found is never remembered as quiet

	q.found = false
	moved := logPosition{snapshot: "100:102:"}
	step("the cursor moved past them", moved, false, 8, 5)
	step("quiet again", moved, false, 9, 5)
	step("the same snapshot, another position", at, false, 10, 6)

	q.newsErr = errors.New("connection reset")
	q.snapshot = "100:103:"
	if _, _, err := h.look(ctx, at.snapshot, 0); err == nil {
		t.Fatal("a failed look in the log: no error")
	}
	q.newsErr = nil
	step("after a failed look", at, false, 12, 8) // the snapshot is not trusted: look in the log
}

// The head poll against the server, step by step: it answers "something" exactly when
// the relay's next step reads something, whatever the order of commits, rollbacks,
// savepoints, commits to other tables, and batches split by the limit; then at random,
// with up to five transactions open at once.
func TestLogHeadSeesEveryCommitToTheLog(t *testing.T) {
	t.Parallel()
	env := newWakeEnv(t, func(c *pgxpool.Config) { c.MaxConns = 10 })
	ctx := context.Background()
	other := pgx.Identifier{env.log.cfg.Schema, "business_rows"}.Sanitize()
	if _, err := env.pool.Exec(ctx, `CREATE TABLE `+other+` (id bigserial PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	recv := newWakeReceiver()
	// One delivery at a time: the events have no key, so nothing orders two of a batch
	// otherwise, and the test compares what was delivered in order.
	r := env.relay(t, recv, LogRelayConfig{BatchSize: 2, MaxConcurrent: 1})
	head := newLogHead(env.pool, env.log)
	delivered := 0
	check := func(what string, want bool) {
		t.Helper()
		found, err := lookFrom(ctx, head, r)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st, err := r.Step(ctx)
		if err != nil {
			t.Fatalf("%s: step: %v", what, err)
		}
		delivered += st.Delivered
		if found != want || found != (st.Read > 0) {
			t.Fatalf("%s: the head poll found news %v, and the step then read %d events; want news %v", what, found, st.Read, want)
		}
	}
	commitOther := func() {
		t.Helper()
		if _, err := env.pool.Exec(ctx, `INSERT INTO `+other+` DEFAULT VALUES`); err != nil {
			t.Fatal(err)
		}
	}

	check("an empty log", false)
	t1 := env.begin(t)
	env.appendIn(t, t1, "t1")
	check("an append not committed", false)
	t2 := env.begin(t)
	env.appendIn(t, t2, "t2")
	wakeCommit(t, t2)
	check("a commit after another transaction's append", true)
	check("nothing since", false)
	wakeCommit(t, t1)
	check("the older transaction commits last", true)
	t3 := env.begin(t)
	env.appendIn(t, t3, "t3")
	if err := t3.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check("a rollback", false)
	commitOther()
	check("a commit to another table", false)
	t4 := env.begin(t)
	commitOther()
	sp, err := t4.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env.appendIn(t, sp, "t4-rolled-back")
	if err := sp.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wakeCommit(t, t4)
	check("a commit whose append was in a rolled-back savepoint", false)
	t5 := env.begin(t)
	sp, err = t5.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env.appendIn(t, sp, "t5")
	if err := sp.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wakeCommit(t, t5)
	check("an append in a released savepoint", true)
	t6 := env.begin(t)
	env.appendIn(t, t6, "t6-a", "t6-b", "t6-c")
	wakeCommit(t, t6)
	check("three events, two read", true)
	check("the rest of the pair", true)
	check("the pair read", false)
	if want := []string{"t2", "t1", "t5", "t6-a", "t6-b", "t6-c"}; !slices.Equal(recv.entities(), want) {
		t.Fatalf("delivered %v, want %v", recv.entities(), want)
	}

	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var open []pgx.Tx
	var openEvents []int
	committed := delivered
	n := 0
	for op := range 300 {
		switch k := rng.IntN(10); {
		case k < 4 && len(open) < 5:
			tx := env.begin(t)
			events := 1 + rng.IntN(3)
			for range events {
				n++
				env.appendIn(t, tx, fmt.Sprintf("r%d", n))
			}
			open, openEvents = append(open, tx), append(openEvents, events)
			check(fmt.Sprintf("op %d: an append not committed", op), false)
			continue
		case k < 5:
			commitOther()
			check(fmt.Sprintf("op %d: a commit to another table", op), false)
			continue
		case len(open) == 0:
			continue
		}
		i := rng.IntN(len(open))
		tx, events := open[i], openEvents[i]
		open, openEvents = slices.Delete(open, i, i+1), slices.Delete(openEvents, i, i+1)
		if rng.IntN(4) == 0 {
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("op %d: a rollback", op), false)
			continue
		}
		wakeCommit(t, tx)
		committed += events
		for left := events; left > 0; left -= 2 { // BatchSize 2
			check(fmt.Sprintf("op %d: a commit of %d events, %d left to read", op, events, left), true)
		}
		check(fmt.Sprintf("op %d: the commit read", op), false)
	}
	if delivered != committed {
		t.Fatalf("delivered %d events, want the %d committed", delivered, committed)
	}
}

// The head poll's look in the log is two ranges of the primary key, whether planned
// for its values or generically, as the cursor's read is.
func TestLogHeadNewsUsesThePrimaryKey(t *testing.T) {
	t.Parallel()
	for _, shards := range []int{1, 8} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			t.Parallel()
			testLogHeadNewsUsesThePrimaryKey(t, shards)
		})
	}
}

func testLogHeadNewsUsesThePrimaryKey(t *testing.T, shards int) {
	env := newShardedWakeEnv(t, nil, shards)
	ctx := context.Background()
	if _, err := env.pool.Exec(ctx, `INSERT INTO `+env.log.n.Table+` (xid, created_at, id, type, entity_id, shard)
		SELECT (3 + i / 2)::text::xid8, now(), gen_random_uuid(), 'order.created', 'e-' || i, i % $1
		FROM generate_series(1, 100000) AS i`, shards); err != nil {
		t.Fatal(err)
	}
	all := newLogHead(env.pool, env.log).shards
	if _, err := env.pool.Exec(ctx, `ANALYZE `+env.log.n.Table); err != nil {
		t.Fatal(err)
	}
	var snapshot string
	if err := env.pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	sql := env.log.n.render(logHeadNews)
	for _, prev := range []string{"1:1:", snapshot} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := func() string {
				conn, err := env.pool.Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Release()
				if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
					t.Fatal(err)
				}
				defer conn.Exec(context.WithoutCancel(ctx), `RESET plan_cache_mode`)
				if _, err := conn.Exec(ctx, `PREPARE outbox_log_head_news (text[], smallint[]) AS `+sql); err != nil {
					t.Fatal(err)
				}
				defer conn.Exec(context.WithoutCancel(ctx), `DEALLOCATE outbox_log_head_news`)
				prevs := make([]string, len(all))
				for i := range prevs {
					prevs[i] = prev
				}
				rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE outbox_log_head_news ($1, $2)`, pgx.QueryExecModeSimpleProtocol, prevs, all)
				if err != nil {
					t.Fatal(err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				return strings.Join(lines, "\n")
			}()
			if strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Sort  ") || strings.Contains(plan, "->  Sort") || strings.Contains(plan, "Bitmap") ||
				strings.Count(plan, "Index Only Scan using outbox_log_p") != 2*env.log.cfg.Partitions {
				t.Errorf("from %s (%s): plan\n%s\nwant index scans of the primary key only", prev, mode, plan)
			}
		}
	}
}

// An idle relay writes nothing: its steps that read nothing and its head polls run on
// sessions the server keeps read-only (default_transaction_read_only), where any write
// would fail. A step with something to move does fail there, which shows the test would
// catch a write.
func TestLogRelayIdleWritesNothing(t *testing.T) {
	t.Parallel()
	var readOnly atomic.Bool
	env := newWakeEnv(t, func(c *pgxpool.Config) {
		c.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			if readOnly.Load() {
				_, err := conn.Exec(ctx, `SET default_transaction_read_only = on`)
				return err
			}
			return nil
		}
	})
	ctx := context.Background()
	recv := newWakeReceiver()
	r := env.relay(t, recv, LogRelayConfig{})
	tx := env.begin(t)
	env.appendIn(t, tx, "first")
	wakeCommit(t, tx)
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 {
		t.Fatalf("first step: %+v, %v; want one event delivered", st, err)
	}

	// From here on every new session of the pool is read-only.
	readOnly.Store(true)
	env.pool.Reset()
	head := newLogHead(env.pool, env.log)
	for i := range 50 {
		found, err := lookFrom(ctx, head, r)
		if err != nil || found {
			t.Fatalf("head poll %d on a read-only session: found %v, %v; want nothing, no error", i, found, err)
		}
		if i%10 == 0 {
			if st, err := r.Step(ctx); err != nil || st.Read != 0 {
				t.Fatalf("idle step %d on a read-only session: %+v, %v; want nothing read, no error", i, st, err)
			}
		}
	}
	var ro string
	if err := env.pool.QueryRow(ctx, `SHOW transaction_read_only`).Scan(&ro); err != nil || ro != "on" {
		t.Fatalf("the relay's sessions: transaction_read_only %q, %v; want on", ro, err)
	}

	writer, err := pgx.Connect(ctx, env.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	if err := pgx.BeginFunc(ctx, writer, func(tx pgx.Tx) error {
		return env.log.AppendTx(ctx, tx, outbox.NewEvent("order.created", "second", "user-1"))
	}); err != nil {
		t.Fatal(err)
	}
	if found, err := lookFrom(ctx, head, r); err != nil || !found {
		t.Fatalf("head poll after a commit: found %v, %v; want news", found, err)
	}
	_, err = r.Step(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" { // read_only_sql_transaction
		t.Fatalf("a step that acknowledges on a read-only session: %v, want SQLSTATE 25006", err)
	}
}

// A relay that polls the log once an hour and never polls its head still delivers at
// once what an appender of its process commits with Log.Transact, or with its own
// transaction followed by Log.Committed.
func TestLogRelayWakesOnCommitsOfItsProcess(t *testing.T) {
	t.Parallel()
	env := newWakeEnv(t, nil)
	ctx := context.Background()
	recv := newWakeReceiver()
	tx := env.begin(t)
	env.appendIn(t, tx, "before")
	wakeCommit(t, tx)
	r := env.relay(t, recv, LogRelayConfig{PollInterval: time.Hour, HeadPollInterval: -1})
	runRelay(t, r)
	// Run's first step reads at once; once it has, Run listens for wake-ups.
	recv.await(t, "the first step", "before")

	for i := range 3 {
		name := fmt.Sprintf("transact-%d", i)
		if err := env.log.Transact(ctx, func(tx pgx.Tx) error {
			return env.log.AppendTx(ctx, tx, outbox.NewEvent("order.created", name, "user-1"))
		}); err != nil {
			t.Fatal(err)
		}
		recv.await(t, "after Log.Transact", name)
	}
	tx = env.begin(t)
	env.appendIn(t, tx, "own-transaction")
	wakeCommit(t, tx)
	env.log.Committed()
	recv.await(t, "after Log.Committed", "own-transaction")
}

// A relay whose polls, head polls included, come every half hour or more finds at once
// what an appender of its process commits in a transaction of its own without calling
// Committed: an append makes its head poll faster for a moment (the append hint). A
// rolled-back transaction delivers nothing; Transact's transactions wake the relay
// after their commit.
func TestLogRelayPollsFasterAfterAnAppendOfItsProcess(t *testing.T) {
	t.Parallel()
	env := newWakeEnv(t, nil)
	ctx := context.Background()
	recv := newWakeReceiver()
	r := env.relay(t, recv, LogRelayConfig{PollInterval: time.Hour, HeadPollInterval: 30 * time.Minute})
	tx := env.begin(t)
	env.appendIn(t, tx, "first")
	wakeCommit(t, tx)
	runRelay(t, r)
	recv.await(t, "the first step", "first")

	for i := range 3 {
		name := fmt.Sprintf("own-%d", i)
		tx := env.begin(t)
		env.appendIn(t, tx, name)
		wakeCommit(t, tx)
		recv.await(t, "after the commit, without Committed", name)
	}
	tx = env.begin(t)
	env.appendIn(t, tx, "rolled-back")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.log.Transact(ctx, func(tx pgx.Tx) error {
		env.appendIn(t, tx, "transact")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	recv.await(t, "after Log.Transact", "transact")
	tx = env.begin(t)
	env.appendIn(t, tx, "last")
	wakeCommit(t, tx)
	recv.await(t, "after the commit, without Committed", "last")
	if slices.Contains(recv.entities(), "rolled-back") {
		t.Error("a rolled-back event was delivered")
	}
}

// A relay that polls the log once an hour finds, by its head poll, what appenders on
// another pool commit without telling it: one after another, out of order (the older
// transaction committing last), and from four writers at once, a quarter of whose
// transactions roll back. Nothing rolled back is delivered.
func TestLogRelayHeadPollFindsCommitsOfOtherProcesses(t *testing.T) {
	t.Parallel()
	for _, shards := range []int{1, 8} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			t.Parallel()
			testLogRelayHeadPollFindsCommitsOfOtherProcesses(t, shards)
		})
	}
}

// On a log of several shards, the idle relay's head poll looks in every shard, and
// the pass it starts steps the shards it named.
func testLogRelayHeadPollFindsCommitsOfOtherProcesses(t *testing.T, shards int) {
	env := newShardedWakeEnv(t, nil, shards)
	ctx := context.Background()
	recv := newWakeReceiver()
	r := env.relay(t, recv, LogRelayConfig{PollInterval: time.Hour})
	runRelay(t, r)
	// The same log, appended to through another pool and another Log, which never wakes
	// the relay: as from another process.
	appPool := wakePool(t, nil)
	appLog, err := NewLog(ctx, appPool, env.log.cfg)
	if err != nil {
		t.Fatal(err)
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := appPool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}
	appendOn := func(tx pgx.Tx, entities ...string) {
		t.Helper()
		for _, e := range entities {
			if err := appLog.AppendTx(ctx, tx, outbox.NewEvent("order.created", e, "user-1")); err != nil {
				t.Fatal(err)
			}
		}
	}

	tx := begin()
	appendOn(tx, "one")
	wakeCommit(t, tx)
	recv.await(t, "a commit", "one")
	older, newer := begin(), begin()
	appendOn(older, "older")
	appendOn(newer, "newer")
	wakeCommit(t, newer)
	recv.await(t, "the newer transaction", "newer")
	wakeCommit(t, older)
	recv.await(t, "the older transaction, committed last", "older")

	var (
		mu        sync.Mutex
		committed []string
		wg        sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), rand.Uint64()))
			for i := range 50 {
				name := fmt.Sprintf("w%d-%d", w, i)
				tx, err := appPool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := appLog.AppendTx(ctx, tx, outbox.NewEvent("order.created", name, "user-1")); err != nil {
					t.Error(err)
					_ = tx.Rollback(ctx)
					return
				}
				if rng.IntN(4) == 0 {
					_ = tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				committed = append(committed, name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	recv.await(t, "four writers", committed...)
	got := recv.entities()
	for _, e := range got {
		if strings.HasPrefix(e, "w") && !slices.Contains(committed, e) {
			t.Errorf("%s was rolled back, and delivered", e)
		}
	}
}

// Log.Transact commits what fn wrote and wakes the log's relays after the commit; it
// rolls back, and wakes nobody, when fn fails or panics.
func TestLogTransactCommitsThenWakes(t *testing.T) {
	t.Parallel()
	env := newWakeEnv(t, nil)
	ctx := context.Background()
	wake, unsubscribe := env.log.wakeups().Subscribe("")
	defer unsubscribe()
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}
	c, err := env.log.Cursor(ctx, "check")
	if err != nil {
		t.Fatal(err)
	}
	read := func() []string {
		t.Helper()
		b, err := c.Read(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range b.Events {
			out = append(out, e.EntityID)
		}
		return out
	}
	appendOne := func(tx pgx.Tx, entity string) error {
		return env.log.AppendTx(ctx, tx, outbox.NewEvent("order.created", entity, "user-1"))
	}

	failure := errors.New("the application's write failed")
	err = env.log.Transact(ctx, func(tx pgx.Tx) error {
		if err := appendOne(tx, "failed"); err != nil {
			return err
		}
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("Transact returned %v, want fn's error", err)
	}
	if woken() {
		t.Error("a rolled-back transaction woke the relays")
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want fn's panic", p)
			}
		}()
		_ = env.log.Transact(ctx, func(tx pgx.Tx) error {
			if err := appendOne(tx, "panicked"); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if woken() {
		t.Error("a panicking transaction woke the relays")
	}
	if got := read(); len(got) != 0 {
		t.Fatalf("read %v after a failed and a panicked Transact, want nothing", got)
	}

	if err := env.log.Transact(ctx, func(tx pgx.Tx) error { return appendOne(tx, "committed") }); err != nil {
		t.Fatal(err)
	}
	if !woken() {
		t.Error("a committed transaction did not wake the relays by the time Transact returned")
	}
	if got := read(); !slices.Equal(got, []string{"committed"}) {
		t.Fatalf("read %v, want [committed]", got)
	}

	other, err := NewLog(ctx, env.pool, env.log.cfg)
	if err != nil {
		t.Fatal(err)
	}
	other.Committed()
	if woken() {
		t.Error("another Log value's Committed woke this one's relays")
	}
}

// HeadPollInterval defaults, and a negative one turns head polls off and is valid.
func TestLogRelayConfigHeadPollInterval(t *testing.T) {
	t.Parallel()
	if got := (LogRelayConfig{}).withDefaults().HeadPollInterval; got != DefaultLogRelayHeadPollInterval {
		t.Errorf("default HeadPollInterval %s, want %s", got, DefaultLogRelayHeadPollInterval)
	}
	cfg := LogRelayConfig{HeadPollInterval: -1}
	if err := cfg.Validate(); err != nil {
		t.Errorf("HeadPollInterval -1: %v, want valid (head polls off)", err)
	}
	if got := cfg.withDefaults().HeadPollInterval; got != -1 {
		t.Errorf("HeadPollInterval -1 became %s", got)
	}
}

// An idle relay slows its head polls: HeadPollInterval for the first second without
// events, then twice as long for every further second, up to HeadPollMaxInterval.
func TestLogRelayHeadPollSlowsWhenIdle(t *testing.T) {
	t.Parallel()
	def := LogRelayConfig{}.withDefaults()
	for _, tc := range []struct {
		name string
		cfg  LogRelayConfig
		idle time.Duration
		want time.Duration
	}{
		{"just idle", def, 0, time.Millisecond},
		{"under a second", def, 999 * time.Millisecond, time.Millisecond},
		{"one second", def, time.Second, 2 * time.Millisecond},
		{"two and a half", def, 2500 * time.Millisecond, 4 * time.Millisecond},
		{"five seconds", def, 5 * time.Second, DefaultLogRelayHeadPollMaxInterval},
		{"an hour", def, time.Hour, DefaultLogRelayHeadPollMaxInterval},
		{"max not a power of two", LogRelayConfig{HeadPollMaxInterval: 5 * time.Millisecond}.withDefaults(), time.Hour, 5 * time.Millisecond},
		{"max at the interval: no slowing", LogRelayConfig{HeadPollInterval: 3 * time.Millisecond, HeadPollMaxInterval: 3 * time.Millisecond}.withDefaults(), time.Hour, 3 * time.Millisecond},
		{"max below the interval: no slowing", LogRelayConfig{HeadPollInterval: 3 * time.Millisecond, HeadPollMaxInterval: -1}.withDefaults(), time.Hour, 3 * time.Millisecond},
		{"head polls off stay off", LogRelayConfig{HeadPollInterval: -1}.withDefaults(), time.Hour, -1},
	} {
		if got := tc.cfg.headPollEvery(tc.idle); got != tc.want {
			t.Errorf("%s: after %s idle, head polls every %s, want %s", tc.name, tc.idle, got, tc.want)
		}
	}
}

// The head poll's look keeps its generic plan on a connection that has run it many
// times, after the log filled and retention truncated a partition. Without its
// transaction's plan_cache_mode, the server switched the look to a plan made at each
// call (about 0.8 ms of its CPU a look over 16 partitions, against 0.1-0.2 ms) after
// such a TRUNCATE, and kept it. The relay's read, which runs in the step's transaction,
// is checked alike.
func TestLogHeadLookKeepsItsGenericPlan(t *testing.T) {
	t.Parallel()
	// One connection, so that every statement's plans are counted on it.
	env := newWakeEnv(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	ctx := context.Background()
	r := env.relay(t, newWakeReceiver(), LogRelayConfig{BatchSize: 10, MaxConcurrent: 1})
	head := newLogHead(env.pool, env.log)
	reader, err := env.log.Cursor(ctx, "reader")
	if err != nil {
		t.Fatal(err)
	}
	customPlans := func(sql string) int64 {
		t.Helper()
		var n int64
		if err := env.pool.QueryRow(ctx, `SELECT coalesce(sum(custom_plans), 0) FROM pg_prepared_statements WHERE statement = $1`, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	calls := func(what string) {
		t.Helper()
		for range 20 {
			tx := env.begin(t)
			env.appendIn(t, tx, what)
			wakeCommit(t, tx)
			if found, err := lookFrom(ctx, head, r); err != nil || !found {
				t.Fatalf("%s: the look found news %v, %v; want news", what, found, err)
			}
			if st, err := r.Step(ctx); err != nil || st.Delivered != 1 {
				t.Fatalf("%s: step %+v, %v; want one event delivered", what, st, err)
			}
			if waiting, err := env.log.Peek(ctx, "reader", 10); err != nil || len(waiting) != 1 {
				t.Fatalf("%s: peek listed %d events, %v; want the one appended", what, len(waiting), err)
			}
			b, err := reader.Read(ctx, 10)
			if err != nil || len(b.Events) != 1 {
				t.Fatalf("%s: the reader read %v; want the one event appended", what, err)
			}
			if err := reader.Ack(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Transactions that finished before the calls below, which every cursor's position
	// will be past.
	var finished int64
	if err := env.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&finished); err != nil {
		t.Fatal(err)
	}
	calls("an empty log")
	// A partition full of events of those transactions, which no read delivers. A young
	// server has used few xids, hence the modulo.
	if _, err := env.pool.Exec(ctx, `INSERT INTO `+env.log.n.Table+` (xid, created_at, id, type, entity_id)
		SELECT (3 + (i / 2) % ($1 - 3))::text::xid8, now(), gen_random_uuid(), 'order.created', 'e-' || i
		FROM generate_series(1, 100000) AS i`, finished); err != nil {
		t.Fatal(err)
	}
	calls("a full partition")
	look, read, cursorRead := customPlans(head.news), customPlans(r.read), customPlans(env.log.readLog)
	if _, err := env.pool.Exec(ctx, `TRUNCATE `+pgx.Identifier{env.log.cfg.Schema, env.log.n.slotName(0)}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	calls("after a TRUNCATE")
	if got := customPlans(head.news); got != look {
		t.Errorf("the look was planned for its call %d times after the TRUNCATE; want its generic plan every time", got-look)
	}
	if got := customPlans(r.read); got != read {
		t.Errorf("the relay's read was planned for its call %d times after the TRUNCATE; want its generic plan every time", got-read)
	}
	if got := customPlans(env.log.readLog); got != cursorRead {
		t.Errorf("the cursor's read (Read, Peek) was planned for its call %d times after the TRUNCATE; want its generic plan every time", got-cursorRead)
	}
}
