package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

func woken(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
	case <-time.After(time.Minute): // generous: a busy machine must not fail it
		t.Fatalf("no wake-up within a minute of %s", what)
	}
}

// notWoken checks that nothing arrives for a while: ten probe intervals.
func notWoken(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
		t.Fatalf("woken by %s", what)
	case <-time.After(10 * mysql.DefaultProbeInterval):
	}
}

// enqueueInCallerTx commits an event in a transaction the store did not run.
func enqueueInCallerTx(t *testing.T, s *mysql.Store, commit bool) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "o-1", "alice")); err != nil {
		t.Fatal(err)
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// The store's own commits wake its subscribers of that user and of all users, not
// those of another user, and a rolled-back Transact wakes no one.
func TestOwnCommitsWakeSubscribersOfThatUserAndOfAll(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, mysql.Config{ProbeInterval: -1})
	all, cancelAll := s.Subscribe("")
	defer cancelAll()
	alice, cancelAlice := s.Subscribe("alice")
	defer cancelAlice()
	bob, cancelBob := s.Subscribe("bob")
	defer cancelBob()
	ctx := context.Background()

	rollback := errors.New("roll back")
	err := s.Transact(ctx, func(tx *sql.Tx) error {
		if err := s.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "o-1", "alice")); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatalf("Transact = %v", err)
	}
	notWoken(t, all, "a rolled-back Transact")

	if err := s.Transact(ctx, func(tx *sql.Tx) error {
		return s.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "o-1", "alice"))
	}); err != nil {
		t.Fatal(err)
	}
	woken(t, all, "a committed Transact")
	woken(t, alice, "a committed Transact for alice")
	notWoken(t, bob, "alice's event")
}

// A commit the store cannot see, in a transaction it did not run, wakes subscribers
// through the probe; with the probe off, nothing does (the processor's poll finds
// the event).
func TestProbeWakesOnCommitsOfOtherWriters(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, mysql.Config{})
	wake, cancel := s.Subscribe("")
	defer cancel()
	notWoken(t, wake, "nothing") // the probe reads its starting point
	enqueueInCallerTx(t, s, false)
	notWoken(t, wake, "a rolled-back caller transaction")
	enqueueInCallerTx(t, s, true)
	woken(t, wake, "a committed caller transaction")

	cfg := s.Config()
	cfg.ProbeInterval = -1
	quiet, err := mysql.New(context.Background(), s.DB(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	qwake, qcancel := quiet.Subscribe("")
	defer qcancel()
	enqueueInCallerTx(t, s, true)
	notWoken(t, qwake, "a caller's commit with the probe off")
}

// Close stops the probe goroutine. (The goroutines of the pool's connections stay:
// the pool is the caller's.)
func TestCloseStopsTheProbe(t *testing.T) {
	db := openDB(t, 2, nil)
	before := goleak.IgnoreCurrent()
	s := newStore(t, db, mysql.Config{})
	defer goleak.VerifyNone(t, before,
		goleak.IgnoreAnyFunction("github.com/go-sql-driver/mysql.(*mysqlConn).startWatcher.func1"),
		goleak.IgnoreAnyFunction("database/sql.(*DB).connectionOpener"))
	_, cancel := s.Subscribe("")
	defer cancel()
	s.Close()
	s.Close() // idempotent
}
