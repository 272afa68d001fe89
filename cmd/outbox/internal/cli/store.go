package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// dsn is a parsed store address.
type dsn struct {
	raw    string
	sqlite string          // path, for sqlite:PATH
	pg     *pgxpool.Config // for postgres://…
	pgCfg  postgres.Config // schema and table from the query string
	my     *gomysql.Config // for mysql://…
	myCfg  mysql.Config    // table from the query string
}

// parseDSN checks a DSN without touching the store.
func parseDSN(raw string) (dsn, error) {
	d := dsn{raw: raw}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return d, usagef("malformed DSN %q: want sqlite:PATH, postgres://… or mysql://…", redactDSN(raw))
	}
	switch scheme {
	case "sqlite", "sqlite3":
		path := strings.TrimPrefix(rest, "//") // sqlite:///abs/path and sqlite://rel/path too
		if path == "" {
			return d, usagef("malformed DSN %q: sqlite: needs a file path, as in sqlite:./outbox.db", raw)
		}
		d.sqlite = path
		return d, nil
	case "postgres", "postgresql":
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return d, usagef("malformed DSN %q: want postgres://user@host:port/database", redactDSN(raw))
		}
		// schema and table are ours; anything else is passed to the server by pgx.
		q := u.Query()
		d.pgCfg.Schema, d.pgCfg.Table = q.Get("schema"), q.Get("table")
		q.Del("schema")
		q.Del("table")
		u.RawQuery = q.Encode()
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			return d, usagef("malformed DSN %q: %v", redactDSN(raw), err)
		}
		d.pg = cfg
		return d, nil
	case "mysql":
		return parseMySQLDSN(d)
	default:
		return d, usagef("unsupported DSN scheme %q in %q: want sqlite:PATH, postgres://… or mysql://…", scheme, redactDSN(raw))
	}
}

func redactDSN(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
}

// parseMySQLDSN reads mysql://user:pass@host:3306/db?table=…; the other query
// parameters are the driver's. Parameters are interpolated on the client unless the
// DSN says otherwise: one round trip per statement instead of a prepare, an execute
// and a close.
func parseMySQLDSN(d dsn) (dsn, error) {
	u, err := url.Parse(d.raw)
	if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" {
		return d, usagef("malformed DSN %q: want mysql://user:pass@host:3306/database", redactDSN(d.raw))
	}
	q := u.Query()
	d.myCfg.Table = q.Get("table")
	_, interpolate := q["interpolateParams"]
	q.Del("table")
	u.RawQuery = q.Encode()
	cfg, err := mysql.ParseDSN(u.String())
	if err != nil {
		return d, usagef("malformed DSN %q: %v", redactDSN(d.raw), err)
	}
	if !interpolate {
		cfg.InterpolateParams = true
	}
	d.my = cfg
	return d, nil
}

// openMySQL connects to MySQL or MariaDB.
func (d dsn) openMySQL(ctx context.Context, forMigrate bool, log *slog.Logger) (*openedStore, error) {
	connector, err := gomysql.NewConnector(d.my)
	if err != nil {
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	db := sql.OpenDB(connector)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	cfg := d.myCfg
	cfg.Logger = log
	if forMigrate {
		return &openedStore{
			migrate: func(ctx context.Context) ([]int, error) { return mysql.Migrate(ctx, db, cfg) },
			close:   func() { db.Close() },
		}, nil
	}
	s, err := mysql.New(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w (run 'outbox migrate' if the table is missing)", err)
	}
	return &openedStore{Store: s, close: func() { s.Close(); db.Close() }}, nil
}

// openedStore is a store with what it takes to close it. For migrate, Store is nil
// and migrate is set.
type openedStore struct {
	outbox.Store
	migrate func(ctx context.Context) ([]int, error)
	close   func()
}

// open connects to the store. Only migrate may create a SQLite file: for every other
// command a missing file is an error, so that a mistyped path writes nothing.
func (d dsn) open(ctx context.Context, forMigrate bool) (*openedStore, error) {
	log := slog.New(slog.DiscardHandler) // the commands report errors themselves
	if d.sqlite != "" {
		if !forMigrate {
			if _, err := os.Stat(d.sqlite); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no SQLite database at %s (create it with 'outbox migrate')", d.sqlite)
			}
		}
		db, err := sqlite.Open(d.sqlite, sqlite.OpenConfig{})
		if err != nil {
			return nil, err
		}
		if forMigrate {
			return &openedStore{
				migrate: func(ctx context.Context) ([]int, error) { return sqlite.Migrate(ctx, db) },
				close:   func() { db.Close() },
			}, nil
		}
		s, err := sqlite.New(ctx, db, sqlite.Config{Logger: log})
		if err != nil {
			db.Close()
			if errors.Is(err, sqlite.ErrNotMigrated) {
				return nil, fmt.Errorf("%w (run 'outbox migrate')", err)
			}
			return nil, err
		}
		return &openedStore{Store: s, close: func() { db.Close() }}, nil
	}
	if d.my != nil {
		return d.openMySQL(ctx, forMigrate, log)
	}
	pool, err := pgxpool.NewWithConfig(ctx, d.pg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	cfg := d.pgCfg
	cfg.Logger = log
	if forMigrate {
		return &openedStore{
			migrate: func(ctx context.Context) ([]int, error) { return postgres.Migrate(ctx, pool, cfg) },
			close:   pool.Close,
		}, nil
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w (run 'outbox migrate' if the schema is missing)", err)
	}
	return &openedStore{Store: s, close: func() { s.Close(); pool.Close() }}, nil
}

// describe names the store for messages, without a password.
func (d dsn) describe() string {
	if d.sqlite != "" {
		return "sqlite:" + d.sqlite
	}
	return redactDSN(d.raw)
}
