package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// An enqueue in a caller's transaction soon after another one sends no NOTIFY of its
// own (one after a quiet spell of WatchInterval does): the store looks for its event
// and notifies it once the transaction has committed — not while it is open, and never
// when it rolled back.
func TestCallerTransactionsWithoutTheirOwnNotifyWakeRelaysAfterCommit(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	markers := otherProcess(t, s)
	cfg := s.Config()
	cfg.DisableListen, cfg.NotifyDebounce, cfg.WatchInterval = true, 50*time.Millisecond, 200*time.Millisecond
	app, err := postgres.New(context.Background(), s.Pool(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	ctx := context.Background()
	first := listening(t, s, markers, "first")
	committed := listening(t, s, markers, "committed")
	rolledBack := listening(t, s, markers, "rolled-back")

	enqueue := func(user string) func(commit bool) {
		t.Helper()
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := app.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", user)); err != nil {
			t.Fatal(err)
		}
		return func(commit bool) {
			t.Helper()
			end := tx.Rollback
			if commit {
				end = tx.Commit
			}
			if err := end(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Three enqueues within the quiet spell: only the first carries a NOTIFY.
	endFirst := enqueue("first")
	endCommitted := enqueue("committed")
	endRolledBack := enqueue("rolled-back")
	if seqs, _ := app.Watched(); seqs != 2 {
		t.Fatalf("the store watches %d seqs, want the 2 enqueues that sent no NOTIFY", seqs)
	}
	endFirst(true)
	awaitWake(t, first, "the commit whose transaction carried the NOTIFY")

	// Open and invisible: looked for, not notified.
	_, looks := app.Watched()
	waitUntil(t, func() bool { _, n := app.Watched(); return n > looks })
	settleNotifications(t, s, markers)
	notWoken(t, committed, "an enqueue whose transaction is still open")

	endRolledBack(false)
	endCommitted(true)
	awaitWake(t, committed, "the watcher, once the transaction committed")
	_, looks = app.Watched()
	waitUntil(t, func() bool { _, n := app.Watched(); return n > looks })
	settleNotifications(t, s, markers)
	notWoken(t, rolledBack, "a rolled-back enqueue")
}

// The watcher's look finds seqs by the primary key however the table got to its size.
// A new table is empty and not analyzed yet (or never is, without autovacuum): a plan
// cached by its first looks takes the table for a few pages and scans it, and would go
// on scanning it at every look as it grows. The look is planned on each run, so after
// the table grew to 20,000 rows unanalyzed it still reads no more than the seqs it asks
// for. The store has one connection, so the test reads that backend's own counters.
func TestWatcherLookReadsByKeyAfterTheTableGrewUnanalyzed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, 1, "")
	var version int
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 150000 {
		t.Skipf("PostgreSQL %d: reading a backend's own table counters at once needs pg_stat_force_next_flush (15 and later)", version)
	}
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	for range 10 { // what a new deployment's first looks see: nothing
		if _, err := s.LookFor(ctx, 1, 2, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO `+table+` (id, type, entity_id, user_id, status, payload, created_at, updated_at, next_attempt_at)
SELECT gen_random_uuid(), 'orderPlaced', 'entity-' || i, 'user-' || (i % 100), 'pending',
       '{"amount":1250}', now(), now(), now()
FROM generate_series(1, 20000) AS i`); err != nil {
		t.Fatal(err)
	}
	seqScans := func() int64 {
		t.Helper()
		// This backend's counts since its last report, reported now.
		if _, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := pool.QueryRow(ctx, `SELECT seq_scan FROM pg_stat_user_tables WHERE relid = $1::regclass`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := seqScans()
	found, err := s.LookFor(ctx, 19990, 19991, 19992, 19993, 19994, 19995)
	if err != nil {
		t.Fatal(err)
	}
	if found != 6 {
		t.Fatalf("the look found %d of the 6 seqs asked for", found)
	}
	if after := seqScans(); after != before {
		t.Fatalf("the look scanned the table (sequential scans %d → %d): its plan did not see the rows", before, after)
	}
}
