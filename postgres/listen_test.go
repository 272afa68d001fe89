package postgres_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// otherProcess returns a second Store on the same table, standing for a relay or an
// application in another process: its commits reach s only through NOTIFY.
func otherProcess(t *testing.T, s *postgres.Store) *postgres.Store {
	t.Helper()
	cfg := s.Config()
	cfg.DisableListen = true
	cfg.NotifyDebounce, cfg.WatchInterval = 0, 0 // its own defaults
	o, err := postgres.New(context.Background(), s.Pool(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

func awaitWake(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
	case <-time.After(time.Minute): // generous: a busy machine must not fail it
		t.Fatalf("no wake-up within a minute: %s", what)
	}
}

func notWoken(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
		t.Fatalf("woken: %s", what)
	default:
	}
}

// settleNotifications returns once every notification committed before the call has
// been fanned out by s: it commits two marker events through writer and waits for
// each. The second arrives in a later fan-out than anything committed before the first.
func settleNotifications(t *testing.T, s, writer *postgres.Store) {
	t.Helper()
	marker := "marker-" + randomName("")
	wake, cancel := s.Subscribe(marker)
	defer cancel()
	for range 2 {
		if err := writer.Enqueue(context.Background(), time.Now(), outbox.NewEvent("marker", "m", marker)); err != nil {
			t.Fatal(err)
		}
		awaitWake(t, wake, "marker notification")
	}
}

// listening subscribes to s for user and returns once the LISTEN connection is up,
// and the wake-up it sends every subscriber when it connects has been consumed.
func listening(t *testing.T, s, writer *postgres.Store, user string) <-chan struct{} {
	t.Helper()
	wake, cancel := s.Subscribe(user)
	t.Cleanup(cancel)
	waitUntil(t, s.Listening)
	settleNotifications(t, s, writer)
	select {
	case <-wake:
	default:
	}
	return wake
}

func TestNotifyIsDeliveredOnCommitOnly(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	writer := otherProcess(t, s)
	ctx := context.Background()
	db := stdlib.OpenDBFromPool(s.Pool())
	t.Cleanup(func() { db.Close() })

	tests := []struct {
		name    string
		enqueue func(ctx context.Context, e *outbox.Event) (commit, rollback func() error, err error)
	}{
		{"pgx.Tx", func(ctx context.Context, e *outbox.Event) (func() error, func() error, error) {
			tx, err := s.Pool().Begin(ctx)
			if err != nil {
				return nil, nil, err
			}
			return func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }, writer.EnqueueTx(ctx, tx, e)
		}},
		{"sql.Tx", func(ctx context.Context, e *outbox.Event) (func() error, func() error, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, nil, err
			}
			return tx.Commit, tx.Rollback, writer.EnqueueSQLTx(ctx, tx, e)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			user := randomName("user-")
			wake := listening(t, s, writer, user)
			_, rollback, err := tc.enqueue(ctx, outbox.NewEvent("t", "rolled-back", user))
			if err != nil {
				t.Fatal(err)
			}
			if err := rollback(); err != nil {
				t.Fatal(err)
			}
			commit, _, err := tc.enqueue(ctx, outbox.NewEvent("t", "committed", user))
			if err != nil {
				t.Fatal(err)
			}
			settleNotifications(t, s, writer)
			notWoken(t, wake, "an enqueue whose transaction was rolled back or has not committed")
			if err := commit(); err != nil {
				t.Fatal(err)
			}
			awaitWake(t, wake, "a committed enqueue")
		})
	}
}

func TestNotifyWakesSubscribersOfThatUserAndOfAll(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	writer := otherProcess(t, s)
	all := listening(t, s, writer, "")
	alice := listening(t, s, writer, "alice")
	bob := listening(t, s, writer, "bob")
	err := writer.Transact(context.Background(), func(tx pgx.Tx) error {
		return writer.EnqueueTx(context.Background(), tx, outbox.NewEvent("t", "e", "alice"))
	})
	if err != nil {
		t.Fatal(err)
	}
	awaitWake(t, alice, "alice's event")
	awaitWake(t, all, "an event, for an all-user subscriber")
	settleNotifications(t, s, writer)
	notWoken(t, bob, "alice's event, for bob's subscriber")
}

// Behind a transaction-mode pooler notifications never arrive: with DisableListen the
// store holds no LISTEN connection and wakes its own subscribers after its commits.
func TestDisableListenWakesOnOwnCommits(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{DisableListen: true})
	ctx := context.Background()
	wake, cancel := s.Subscribe("")
	defer cancel()
	if err := s.Transact(ctx, func(tx pgx.Tx) error {
		return s.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", "u"))
	}); err != nil {
		t.Fatal(err)
	}
	awaitWake(t, wake, "Transact committed an event")
	if err := s.Enqueue(ctx, time.Now(), outbox.NewEvent("t", "e", "u")); err != nil {
		t.Fatal(err)
	}
	awaitWake(t, wake, "Enqueue committed an event")
	if err := s.Transact(ctx, func(tx pgx.Tx) error {
		return s.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", "u"))
	}); err != nil {
		t.Fatal(err)
	}
	if pid := s.ListenerPID(); pid != 0 || s.Listening() {
		t.Fatalf("a store with DisableListen opened a LISTEN connection (pid %d)", pid)
	}
	awaitWake(t, wake, "Transact committed an event")
	failed := s.Transact(ctx, func(tx pgx.Tx) error {
		if err := s.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", "u")); err != nil {
			return err
		}
		return sql.ErrNoRows // any error: the transaction rolls back
	})
	if failed != sql.ErrNoRows {
		t.Fatalf("Transact returned %v, want fn's error", failed)
	}
	notWoken(t, wake, "a rolled-back Transact")
}

// The LISTEN connection is cut (as a server restart or a network failure would): the
// store reconnects by itself, wakes every subscriber for what it may have missed,
// and notifications flow again.
func TestListenReconnectsAfterTheConnectionIsTerminated(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	writer := otherProcess(t, s)
	wake := listening(t, s, writer, "")
	ctx := context.Background()
	for round := range 3 {
		pid := s.ListenerPID()
		var ok bool
		if err := s.Pool().QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok); err != nil || !ok {
			t.Fatalf("round %d: terminate %d: %v %v", round, pid, ok, err)
		}
		// Committed while nobody listens: the wake-up comes when the connection is back.
		if err := writer.Enqueue(ctx, time.Now(), outbox.NewEvent("t", "missed", "u")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return s.Listening() && s.ListenerPID() != pid })
		awaitWake(t, wake, "the reconnected listener")
		settleNotifications(t, s, writer) // and notifications arrive again
	}
}

// Under a burst of commits, subscribers are woken once per NotifyDebounce, however
// many notifications arrive: the first at once, the rest gathered for the next.
func TestNotificationsAreDebounced(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{NotifyDebounce: time.Hour})
	writer := otherProcess(t, s)
	wake, cancel := s.Subscribe("")
	defer cancel()
	awaitWake(t, wake, "LISTEN connection established") // the first fan-out: at once
	ctx := context.Background()
	users := []string{"a", "b", "c"}
	for _, u := range users {
		for range 10 {
			if err := writer.Enqueue(ctx, time.Now(), outbox.NewEvent("t", "e", u)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitUntil(t, func() bool {
		got := s.PendingWakeUps()
		slices.Sort(got)
		return slices.Equal(got, users)
	})
	notWoken(t, wake, "notifications within the debounce interval of the last wake-up")
}

var _ = outboxtest.T0

// With DisableNotify a store's commits send nothing: listeners learn of them by polling.
func TestDisableNotifySendsNoNotification(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	writer := otherProcess(t, s)
	cfg := s.Config()
	cfg.DisableNotify, cfg.DisableListen = true, true
	silent, err := postgres.New(context.Background(), s.Pool(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(silent.Close)
	wake := listening(t, s, writer, "quiet-user")
	if err := silent.Enqueue(context.Background(), time.Now(), outbox.NewEvent("t", "e", "quiet-user")); err != nil {
		t.Fatal(err)
	}
	settleNotifications(t, s, writer)
	notWoken(t, wake, "an enqueue by a store with DisableNotify")
}

// Close stops the LISTEN connection and every goroutine the store started.
func TestCloseStopsTheListener(t *testing.T) {
	pool := newPool(t, 2, "")
	s := newStore(t, pool, postgres.Config{})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, cancel := s.Subscribe("")
	defer cancel()
	waitUntil(t, s.Listening)
	pid := s.ListenerPID()
	s.Close()
	s.Close() // idempotent
	if s.Listening() {
		t.Fatal("listening after Close")
	}
	// The server ends the backend once it reads the connection's Terminate message.
	waitUntil(t, func() bool {
		var alive bool
		err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, int32(pid)).Scan(&alive)
		return err == nil && !alive
	})
}

// appOfARelay returns a relay's store, a writer standing for another process (for
// markers), and an application's store on the same table that holds no LISTEN
// connection, gathers its NOTIFYs for an hour and has a quiet spell of four: what it
// sends, and when, is then seen by the relay alone. The application's store is closed when t ends, if the test
// has not closed it.
func appOfARelay(t *testing.T) (relay, markers, app *postgres.Store) {
	t.Helper()
	relay = newStore(t, nil, postgres.Config{})
	markers = otherProcess(t, relay)
	cfg := relay.Config()
	cfg.DisableListen, cfg.NotifyDebounce, cfg.WatchInterval = true, time.Hour, 4*time.Hour
	app, err := postgres.New(context.Background(), relay.Pool(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	return relay, markers, app
}

// The store's own commits (Transact, Enqueue) are announced after the commit, by NOTIFYs
// it gathers: a rolled-back Transact announces nothing; under a burst, one NOTIFY per
// NotifyDebounce goes out; and Close sends what is still gathered. (The rolled-back
// Transact is the quiet spell's first enqueue, whose NOTIFY went inside it and so
// nowhere; the later ones are notified after their commits.)
func TestOwnCommitsAreNotifiedAfterCommitGatheredAndFlushedOnClose(t *testing.T) {
	t.Parallel()
	relay, markers, app := appOfARelay(t)
	ctx := context.Background()
	first := listening(t, relay, markers, "first")
	rolledBack := listening(t, relay, markers, "rolled-back")
	later := listening(t, relay, markers, "later")
	enqueue := func(user string, commit bool) {
		t.Helper()
		err := app.Transact(ctx, func(tx pgx.Tx) error {
			if err := app.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", user)); err != nil {
				return err
			}
			if !commit {
				return sql.ErrNoRows
			}
			return nil
		})
		if commit && err != nil || !commit && err != sql.ErrNoRows {
			t.Fatalf("Transact(%s, commit %v): %v", user, commit, err)
		}
	}

	enqueue("rolled-back", false)
	enqueue("first", true) // the first after a quiet spell: sent at once
	awaitWake(t, first, "the first commit's NOTIFY")
	enqueue("later", true) // within the debounce interval (an hour): gathered
	settleNotifications(t, relay, markers)
	notWoken(t, rolledBack, "a rolled-back Transact")
	notWoken(t, later, "a commit gathered for the next NOTIFY")
	app.Close()
	awaitWake(t, later, "the NOTIFY that Close flushed")
}

// Transact's first enqueue after a quiet spell sends its NOTIFY inside the transaction,
// as an enqueue in a caller's transaction does: PostgreSQL delivers it at the commit,
// with no statement after it. The next ones within WatchInterval (the quiet spell) are
// notified by the store after their commit.
func TestTransactNotifiesInsideItsTransactionAfterAQuietSpell(t *testing.T) {
	t.Parallel()
	relay, markers, app := appOfARelay(t)
	ctx := context.Background()
	first := listening(t, relay, markers, "first")
	second := listening(t, relay, markers, "second")
	transact := func(user string) {
		t.Helper()
		if err := app.Transact(ctx, func(tx pgx.Tx) error {
			return app.EnqueueTx(ctx, tx, outbox.NewEvent("t", "e", user))
		}); err != nil {
			t.Fatal(err)
		}
	}

	transact("first")
	awaitWake(t, first, "the NOTIFY inside the first Transact")
	if app.NotifierStarted() {
		t.Fatal("the first Transact after a quiet spell left its NOTIFY to after the commit")
	}
	transact("second")
	awaitWake(t, second, "the NOTIFY after the second Transact's commit")
	if !app.NotifierStarted() {
		t.Fatal("a Transact within WatchInterval of an in-transaction NOTIFY was not notified after its commit")
	}
}
