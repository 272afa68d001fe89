package postgres

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"text/template"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded files; their SQL is a template that names the table
// and its indexes ({{.Table}}, {{.Name "pending"}}), filled in from a Config.
var migrations, migrationTemplates = func() ([]migrate.Migration, map[int]*template.Template) {
	ms, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded files are part of the build; a bad name is a bug caught by every test
	}
	ts := make(map[int]*template.Template, len(ms))
	for _, m := range ms {
		ts[m.Version] = template.Must(template.New(m.Name).Option("missingkey=error").Parse(m.SQL))
	}
	return ms, ts
}()

// SchemaVersion is the schema version this package reads and writes.
var SchemaVersion = len(migrations)

// ErrNotMigrated is returned by New when the outbox table is missing or older than
// this package: run Migrate (or `outbox migrate`) first.
var ErrNotMigrated = errors.New("outbox/postgres: schema not migrated")

// Migrate brings the outbox table named by cfg (Schema, Table) to SchemaVersion,
// creating the schema if needed, and returns the versions it applied. It is safe to
// run on an up-to-date database, and by several relays at once: they take turns on an
// advisory lock, and the ones that come second find nothing to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool, cfg Config) ([]int, error) {
	if pool == nil {
		return nil, configError("pool", "must not be nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := newNames(cfg)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: migrate: %w", err)
	}
	defer conn.Release()
	// A session lock, held across the per-migration transactions; the server drops it
	// with the session if this process dies half-way.
	lockKey := "outbox migrate " + n.Table
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, lockKey); err != nil {
		return nil, fmt.Errorf("outbox/postgres: migrate: take advisory lock: %w", err)
	}
	defer func() {
		// With a broken connection the unlock fails, and the lock went with the session.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lockKey); err != nil {
			conn.Conn().Close(context.Background())
		}
	}()

	done, err := migrate.Run(ctx, target{conn: conn.Conn(), cfg: cfg, names: n}, migrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("outbox/postgres: %w", err)
	}
	return versions, nil
}

type target struct {
	conn  *pgx.Conn
	cfg   Config
	names names
}

func (t target) Applied(ctx context.Context) (map[int]bool, error) {
	// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
	// exists; asking first lets a user without it migrate into an existing schema.
	var exists bool
	if err := t.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, t.cfg.Schema).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		if _, err := t.conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+t.names.Schema); err != nil {
			return nil, fmt.Errorf("create schema %s: %w", t.names.Schema, err)
		}
	}
	if _, err := t.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.names.Migrations+` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return nil, err
	}
	return appliedVersions(ctx, t.conn, t.names)
}

func (t target) Apply(ctx context.Context, m migrate.Migration) error {
	var sql bytes.Buffer
	if err := migrationTemplates[m.Version].Execute(&sql, t.names); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, t.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+t.names.Migrations+` (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		return err
	})
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func appliedVersions(ctx context.Context, q querier, n names) (map[int]bool, error) {
	rows, err := q.Query(ctx, `SELECT version FROM `+n.Migrations)
	if err != nil {
		return nil, err
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, err
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[v] = true
	}
	return applied, nil
}

// checkSchema makes New fail early, and clearly, on a database that was not migrated.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, n names) error {
	var found *string
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1)::text`, n.Migrations).Scan(&found); err != nil {
		return fmt.Errorf("outbox/postgres: read schema version: %w", err)
	}
	if found == nil {
		return fmt.Errorf("%w: %s does not exist; run postgres.Migrate (or `outbox migrate`) first", ErrNotMigrated, n.Migrations)
	}
	applied, err := appliedVersions(ctx, pool, n)
	if err != nil {
		return fmt.Errorf("outbox/postgres: read schema version: %w", err)
	}
	for v := range applied {
		if v > SchemaVersion {
			return fmt.Errorf("outbox/postgres: %s is at version %d, newer than this program knows (%d)", n.Table, v, SchemaVersion)
		}
	}
	if len(applied) < SchemaVersion {
		return fmt.Errorf("%w: %s is at version %d of %d; run postgres.Migrate (or `outbox migrate`)", ErrNotMigrated, n.Table, len(applied), SchemaVersion)
	}
	return nil
}
