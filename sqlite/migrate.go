package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/fitiq/outbox/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

var migrations = func() []migrate.Migration {
	ms, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded files are part of the build; a bad name is a bug caught by every test
	}
	return ms
}()

// SchemaVersion is the schema version this package reads and writes.
var SchemaVersion = len(migrations)

// ErrNotMigrated is returned by New when the database's schema is older than this
// package's: run Migrate (or `outbox migrate`) first.
var ErrNotMigrated = errors.New("outbox/sqlite: schema not migrated")

// Migrate brings db's outbox schema to SchemaVersion and returns the versions it
// applied. It is safe to run on an up-to-date database.
func Migrate(ctx context.Context, db *sql.DB) ([]int, error) {
	done, err := migrate.Run(ctx, target{db}, migrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("outbox/sqlite: %w", err)
	}
	return versions, nil
}

func checkSchema(ctx context.Context, db *sql.DB) error {
	applied, err := target{db}.Applied(ctx)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: read schema version: %w", err)
	}
	if len(applied) < SchemaVersion {
		return fmt.Errorf("%w: at version %d of %d", ErrNotMigrated, len(applied), SchemaVersion)
	}
	return nil
}

type target struct{ db *sql.DB }

const createMigrationsTable = `
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)`

func (t target) Applied(ctx context.Context) (map[int]bool, error) {
	if _, err := t.db.ExecContext(ctx, createMigrationsTable); err != nil {
		return nil, err
	}
	rows, err := t.db.QueryContext(ctx, `SELECT version FROM outbox_schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

func (t target) Apply(ctx context.Context, m migrate.Migration) error {
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO outbox_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}
