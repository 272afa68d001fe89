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
