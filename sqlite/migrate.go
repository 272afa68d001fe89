package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"

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
	done, err := migrate.Run(ctx, target(db), migrations)
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
	applied, err := target(db).Applied(ctx)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: read schema version: %w", err)
	}
	if len(applied) < SchemaVersion {
		return fmt.Errorf("%w: at version %d of %d", ErrNotMigrated, len(applied), SchemaVersion)
	}
	return nil
}

// target records the outbox's schema versions beside its table.
func target(db *sql.DB) migrate.SQLTarget {
	return migrate.SQLTarget{DB: db, Table: "outbox_schema_migrations"}
}
