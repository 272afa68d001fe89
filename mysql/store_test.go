package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/outboxtest"
)

// dsnConfig returns the test server's address, or skips t when none is configured.
// OUTBOX_MYSQL_DSN is in the driver's form (root@tcp(127.0.0.1:3306)/test) or a
// mysql:// URL.
func dsnConfig(t testing.TB) *gomysql.Config {
	t.Helper()
	v := os.Getenv("OUTBOX_MYSQL_DSN")
	if v == "" {
		t.Skip("OUTBOX_MYSQL_DSN is not set: skipping a MySQL test (.ci/run sets it, e.g. root@tcp(127.0.0.1:3306)/test)")
	}
	cfg, err := mysql.ParseDSN(v)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// openDB opens a small pool on the test database, closed when t ends.
func openDB(t testing.TB, maxConns int, edit func(*gomysql.Config)) *sql.DB {
	t.Helper()
	cfg := dsnConfig(t)
	if edit != nil {
		edit(cfg)
	}
	c, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(maxConns)
	t.Cleanup(func() { db.Close() })
	return db
}

var (
	sharedOnce sync.Once
	shared     *sql.DB
)

// sharedDB is one pool for the many short tests of the package. The server is shared
// with other developers' tests: keep pools small.
func sharedDB(t testing.TB) *sql.DB {
	t.Helper()
	cfg := dsnConfig(t)
	sharedOnce.Do(func() {
		c, err := gomysql.NewConnector(cfg)
		if err != nil {
			panic(err)
		}
		shared = sql.OpenDB(c)
		shared.SetMaxOpenConns(8)
	})
	return shared
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// freshTable returns the name of a table no one else uses, dropped (with its
// migrations table) when t ends. Migrate creates it.
func freshTable(t testing.TB, db *sql.DB) string {
	t.Helper()
	table := randomName("outbox_test_")
	t.Cleanup(func() {
		if _, err := db.Exec("DROP TABLE IF EXISTS `" + table + "`, `" + table + "_schema_migrations`"); err != nil {
			t.Errorf("drop table %s: %v", table, err)
		}
	})
	return table
}

// newStore returns a Store on a fresh, migrated table of db (the shared pool when nil).
func newStore(t testing.TB, db *sql.DB, cfg mysql.Config) *mysql.Store {
	t.Helper()
	if db == nil {
		db = sharedDB(t)
	}
	if cfg.Table == "" {
		cfg.Table = freshTable(t, db)
	}
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	ctx := context.Background()
	if _, err := mysql.Migrate(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := mysql.New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func harness(s *mysql.Store) outboxtest.Harness {
	return outboxtest.Harness{
		Store: s,
		EnqueueInTx: func(ctx context.Context, commit bool, events ...*outbox.Event) error {
			tx, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if err := s.EnqueueTx(ctx, tx, events...); err != nil {
				tx.Rollback()
				return err
			}
			if commit {
				return tx.Commit()
			}
			return tx.Rollback()
		},
		WithEnqueueHook: func(hook outbox.EnqueueHook) outboxtest.Harness {
			cfg := s.Config()
			cfg.OnEnqueue = hook
			other, err := mysql.New(context.Background(), s.DB(), cfg)
			if err != nil {
				panic(err)
			}
			return harness(other)
		},
		SetMetadataJSON: func(ctx context.Context, id, text string) error {
			_, err := s.DB().ExecContext(ctx, "UPDATE `"+s.Config().Table+"` SET metadata = ? WHERE id = UNHEX(REPLACE(?, '-', ''))", text, id)
			return err
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(newStore(t, nil, mysql.Config{}))
	}, outboxtest.Parallel())
}

// Sessions whose default is READ COMMITTED (the callers' transactions, the store's
// reads outside transactions) pass the same suite.
func TestConformanceSessionReadCommitted(t *testing.T) {
	t.Parallel()
	db := openDB(t, 8, func(c *gomysql.Config) {
		c.Params = map[string]string{isolationVariable(t): "'READ-COMMITTED'"}
	})
	var level string
	if err := db.QueryRow(`SELECT @@` + isolationVariable(t)).Scan(&level); err != nil || level != "READ-COMMITTED" {
		t.Fatalf("session isolation %q (%v), want READ-COMMITTED", level, err)
	}
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(newStore(t, db, mysql.Config{}))
	}, outboxtest.Parallel())
}

// isolationVariable names the session's isolation variable: MySQL 8 has only
// transaction_isolation, MariaDB before 11.1 only tx_isolation.
func isolationVariable(t testing.TB) string {
	var v string
	err := sharedDB(t).QueryRow(`SELECT @@transaction_isolation`).Scan(&v)
	var me *gomysql.MySQLError
	if errors.As(err, &me) && me.Number == 1193 {
		return "tx_isolation"
	}
	return "transaction_isolation"
}

// MariaDB can assign an UPDATE's columns all from the old row (SIMULTANEOUS_ASSIGNMENT)
// instead of left to right: the store's statements read each column before assigning
// it, so they mean the same under both, and the suite passes.
func TestConformanceSimultaneousAssignment(t *testing.T) {
	t.Parallel()
	var version string
	if err := sharedDB(t).QueryRow(`SELECT VERSION()`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, "MariaDB") {
		t.Skipf("%s has no SIMULTANEOUS_ASSIGNMENT mode (MariaDB only)", version)
	}
	db := openDB(t, 8, func(c *gomysql.Config) {
		c.Params = map[string]string{"sql_mode": "CONCAT(@@sql_mode, ',SIMULTANEOUS_ASSIGNMENT')"}
	})
	var mode string
	if err := db.QueryRow(`SELECT @@sql_mode`).Scan(&mode); err != nil || !strings.Contains(mode, "SIMULTANEOUS_ASSIGNMENT") {
		t.Fatalf("sql_mode %q (%v): the mode is not set", mode, err)
	}
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(newStore(t, db, mysql.Config{}))
	}, outboxtest.Parallel())
}

// The store's own transactions at REPEATABLE READ pass the same suite.
func TestConformanceRepeatableRead(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(newStore(t, nil, mysql.Config{Isolation: sql.LevelRepeatableRead}))
	}, outboxtest.Parallel())
}
