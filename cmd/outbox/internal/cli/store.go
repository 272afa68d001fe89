package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// dsn is a parsed store address.
type dsn struct {
	raw    string
	sqlite string          // path, for sqlite:PATH
	pg     *pgxpool.Config // for postgres://…
	pgCfg  postgres.Config // schema and table from the query string
}

// parseDSN checks a DSN without touching the store.
func parseDSN(raw string) (dsn, error) {
	d := dsn{raw: raw}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return d, usagef("malformed DSN %q: want sqlite:PATH or postgres://…", redactDSN(raw))
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
	default:
		return d, usagef("unsupported DSN scheme %q in %q: want sqlite:PATH or postgres://…", scheme, redactDSN(raw))
	}
}

func redactDSN(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
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
