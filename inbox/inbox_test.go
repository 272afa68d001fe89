package inbox_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"net/url"
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
	t.Parallel()
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		path := filepath.Join(t.TempDir(), "receiver.db")
		db := openSQLiteAt(t, path)
		// The same file through the same driver; sqlite.Open has set WAL on the file, the
		// rest of its settings that matter here are per connection.
		dsn := (&url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=busy_timeout(10000)&_txlock=immediate"}).String()
		return inboxtest.Harness{DB: db, Dialect: inbox.SQLite, Connector: connector(t, db, dsn)}
	}, inboxtest.Parallel())
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	db := postgresDB(t)
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		return inboxtest.Harness{DB: db, Dialect: inbox.Postgres, Connector: connector(t, db, os.Getenv("OUTBOX_POSTGRES_DSN"))}
	}, inboxtest.Parallel())
}

// connector connects to dsn through db's driver, for the suite's interfering driver.
func connector(t testing.TB, db *sql.DB, dsn string) driver.Connector {
	t.Helper()
	if dc, ok := db.Driver().(driver.DriverContext); ok {
		c, err := dc.OpenConnector(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return dsnConnector{db.Driver(), dsn}
}

// dsnConnector is what database/sql does for a driver without OpenConnector.
type dsnConnector struct {
	drv driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

func openSQLite(t testing.TB) *sql.DB {
	t.Helper()
	return openSQLiteAt(t, filepath.Join(t.TempDir(), "receiver.db"))
}

func openSQLiteAt(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
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
	t.Parallel()
	db := mysqlDB(t)
	inboxtest.Run(t, func(t *testing.T) inboxtest.Harness {
		return inboxtest.Harness{DB: db, Dialect: inbox.MySQL, Connector: connector(t, db, os.Getenv("OUTBOX_MYSQL_DSN"))}
	}, inboxtest.Parallel())
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
