package sqltx_test

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/fitiq/outbox/internal/sqltx"
)

func open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE rows (v TEXT)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM rows`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCommittedTransactionsReportTheirUsersAndRolledBackOnesNothing(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	var tr sqltx.Tracker
	var reported [][]string
	committed := func(users map[string]struct{}) { reported = append(reported, slices.Sorted(maps.Keys(users))) }
	write := func(tx *sql.Tx, users ...string) error {
		if _, err := tx.Exec(`INSERT INTO rows VALUES ('x')`); err != nil {
			return err
		}
		set := map[string]struct{}{}
		for _, u := range users {
			set[u] = struct{}{}
		}
		if !tr.Add(tx, set) {
			t.Fatal("Add: a transaction of Transact was not known")
		}
		return nil
	}

	if err := tr.Transact(ctx, db, "test", func(tx *sql.Tx) error {
		if err := write(tx, "alice"); err != nil {
			return err
		}
		return write(tx, "bob", "alice")
	}, committed); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("fn failed")
	if err := tr.Transact(ctx, db, "test", func(tx *sql.Tx) error {
		if err := write(tx, "carol"); err != nil {
			return err
		}
		return failed
	}, committed); !errors.Is(err, failed) {
		t.Fatalf("Transact = %v, want fn's error", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Transact swallowed fn's panic")
			}
		}()
		_ = tr.Transact(ctx, db, "test", func(tx *sql.Tx) error {
			_ = write(tx, "dave")
			panic("fn panicked")
		}, committed)
	}()
	if err := tr.Transact(ctx, db, "test", func(*sql.Tx) error { return nil }, committed); err != nil {
		t.Fatal(err)
	}

	if want := [][]string{{"alice", "bob"}}; !slices.EqualFunc(reported, want, slices.Equal) {
		t.Errorf("committed with %v, want %v (nothing for the rolled-back, panicked and empty ones)", reported, want)
	}
	if n := count(t, db); n != 2 {
		t.Errorf("%d rows, want the committed transaction's 2", n)
	}
}

func TestAddRefusesATransactionItDoesNotRun(t *testing.T) {
	db := open(t)
	var tr sqltx.Tracker
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if tr.Add(tx, map[string]struct{}{"u": {}}) {
		t.Fatal("Add took a transaction Transact is not running")
	}
}

// TrackerOf keeps any record for any comparable transaction type, as the PostgreSQL
// store does for its pgx transactions; here a fake transaction ends by its own say.
func TestTrackerOfKeepsARecordPerRunningTransaction(t *testing.T) {
	type fakeTx struct{ n int }
	type record struct{ adds []string }
	var tr sqltx.TrackerOf[*fakeTx, record]
	var committedTx, rolledBack int
	end := sqltx.End[*fakeTx]{
		Commit:   func(context.Context, *fakeTx) error { committedTx++; return nil },
		Rollback: func(context.Context, *fakeTx) error { rolledBack++; return nil },
		Done:     errors.New("done"),
	}
	begin := func(context.Context) (*fakeTx, error) { return &fakeTx{}, nil }
	var got []string
	err := tr.Transact(context.Background(), begin, end, "test", func(tx *fakeTx) error {
		if !tr.Running(tx) {
			t.Error("Running: false inside Transact")
		}
		for _, u := range []string{"alice", "bob"} {
			if !tr.Add(tx, func(r *record) { r.adds = append(r.adds, u) }) {
				t.Error("Add: a transaction of Transact was not known")
			}
		}
		return nil
	}, func(r *record) { got = r.adds })
	if err != nil || committedTx != 1 || rolledBack != 0 {
		t.Fatalf("Transact: err %v, %d commits, %d rollbacks; want one commit", err, committedTx, rolledBack)
	}
	if !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("committed with %v, want [alice bob]", got)
	}
	other := &fakeTx{}
	if tr.Running(other) || tr.Add(other, func(*record) { t.Error("record ran for a transaction Transact does not run") }) {
		t.Error("a transaction Transact does not run is known")
	}

	called := false
	err = tr.Transact(context.Background(), begin, end, "test", func(*fakeTx) error { return errors.New("no") }, func(*record) { called = true })
	if err == nil || rolledBack != 1 || called {
		t.Errorf("a failing fn: err %v, %d rollbacks, committed called %v; want the error, one rollback, no call", err, rolledBack, called)
	}
}

func TestRunCommitsOnNilAndRollsBackOnAnError(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	insert := func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO rows VALUES ('x')`)
		return err
	}
	if err := sqltx.Run(ctx, db, nil, insert); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("no")
	err := sqltx.Run(ctx, db, nil, func(tx *sql.Tx) error {
		if err := insert(tx); err != nil {
			return err
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("Run: %v, want fn's error", err)
	}
	if n := count(t, db); n != 1 {
		t.Errorf("%d rows, want the committed one only", n)
	}
}
