package inbox_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/sqlite"
)

func TestSQLite(t *testing.T) {
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		return inboxtest.Harness{DB: openSQLite(t), Dialect: inbox.SQLite}
	})
}

func TestPostgres(t *testing.T) {
	db := postgresDB(t)
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		return inboxtest.Harness{DB: db, Dialect: inbox.Postgres}
	})
}

func openSQLite(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "receiver.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var (
	pgOnce sync.Once
	pgDB   *sql.DB
	pgErr  error
)

// postgresDB is one pool for the package's tests; each test names its own tables.
func postgresDB(t testing.TB) *sql.DB {
	t.Helper()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("set OUTBOX_POSTGRES_DSN (postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL tests")
	}
	pgOnce.Do(func() {
		pgDB, pgErr = sql.Open("pgx", dsn)
		if pgErr == nil {
			pgErr = pgDB.Ping()
		}
	})
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgDB
}

func TestMySQL(t *testing.T) {
	db := mysqlDB(t)
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		return inboxtest.Harness{DB: db, Dialect: inbox.MySQL}
	})
}

var (
	myOnce sync.Once
	myDB   *sql.DB
	myErr  error
)

func mysqlDB(t testing.TB) *sql.DB {
	t.Helper()
	dsn := os.Getenv("OUTBOX_MYSQL_DSN")
	if dsn == "" {
		t.Skip("set OUTBOX_MYSQL_DSN (root@tcp(127.0.0.1:3306)/test) to run the MySQL/MariaDB tests")
	}
	myOnce.Do(func() {
		myDB, myErr = sql.Open("mysql", dsn)
		if myErr == nil {
			myErr = myDB.Ping()
		}
	})
	if myErr != nil {
		t.Fatal(myErr)
	}
	return myDB
}
