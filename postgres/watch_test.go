package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// An enqueue in a caller's transaction soon after another one sends no NOTIFY of its
// own (one per NotifyDebounce does): the store looks for its event and notifies it once
// the transaction has committed — not while it is open, and never when it rolled back.
func TestCallerTransactionsWithoutTheirOwnNotifyWakeRelaysAfterCommit(t *testing.T) {
	s := newStore(t, nil, postgres.Config{})
	markers := otherProcess(t, s)
	cfg := s.Config()
	cfg.DisableListen, cfg.NotifyDebounce = true, 50*time.Millisecond
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
	// Three enqueues within the debounce interval: only the first carries a NOTIFY.
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
