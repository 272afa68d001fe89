package inbox

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"fmt"
	"text/template"
	"time"

	"github.com/fitiq/outbox/internal/migrate"
)

//go:embed migrations
var migrationFiles embed.FS

// migrations are the embedded files of each dialect; their SQL is a template naming
// the table and its index ({{.Table}}, {{.Index}}), filled in from a Config.
var migrations, migrationTemplates = func() (map[Dialect][]migrate.Migration, map[string]*template.Template) {
	all, ts := map[Dialect][]migrate.Migration{}, map[string]*template.Template{}
	for _, d := range []Dialect{SQLite, Postgres, MySQL} {
		ms, err := migrate.Load(migrationFiles, "migrations/"+d.String())
		if err != nil {
			panic(err) // the embedded files are part of the build; a bad name is a bug caught by every test
		}
		for _, m := range ms {
			ts[templateKey(d, m)] = template.Must(template.New(m.Name).Option("missingkey=error").Parse(m.SQL))
		}
		all[d] = ms
	}
	return all, ts
}()

func templateKey(d Dialect, m migrate.Migration) string { return fmt.Sprintf("%s/%d", d, m.Version) }

// SchemaVersion is the schema version of the inbox table this package reads and
// writes (the same for every dialect).
var SchemaVersion = len(migrations[SQLite])

// Migrate creates or updates the inbox table named by cfg (Dialect, Table) in db and
// returns the versions it applied. It is safe to run on an up-to-date database, and,
// on PostgreSQL and MySQL, by several processes at once: they take turns on a lock
// named after the table.
func Migrate(ctx context.Context, db *sql.DB, cfg Config) ([]int, error) {
	if db == nil {
		return nil, argError("db", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("inbox: migrate: %w", err)
	}
	defer conn.Close()
	n := newNames(cfg.Table)
	lockKey := "inbox migrate " + n.Table
	switch cfg.Dialect {
	case Postgres:
		// A session lock on this connection, dropped with the session if the process dies.
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext($1))`, lockKey); err != nil {
			return nil, fmt.Errorf("inbox: migrate: take advisory lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lockKey)
	case MySQL:
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, lockKey).Scan(&got); err != nil || got.Int64 != 1 {
			return nil, fmt.Errorf("inbox: migrate: take lock %q: got %v, %v", lockKey, got.Int64, err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, lockKey)
	}
	done, err := migrate.Run(ctx, target{conn: conn, dialect: cfg.Dialect, names: n}, migrations[cfg.Dialect])
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("inbox: %w", err)
	}
	return versions, nil
}

// target records the inbox's schema versions in a bookkeeping table beside it.
type target struct {
	conn    *sql.Conn
	dialect Dialect
	names   names
}

func (t target) Applied(ctx context.Context) (map[int]bool, error) {
	if _, err := t.conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t.names.Migrations+` (
    version    INTEGER      PRIMARY KEY,
    name       VARCHAR(255) NOT NULL,
    applied_at BIGINT       NOT NULL
)`); err != nil {
		return nil, err
	}
	return appliedVersions(ctx, t.conn, t.names)
}

func (t target) Apply(ctx context.Context, m migrate.Migration) error {
	var body bytes.Buffer
	if err := migrationTemplates[templateKey(t.dialect, m)].Execute(&body, t.names); err != nil {
		return err
	}
	record := `INSERT INTO ` + t.names.Migrations + ` (version, name, applied_at) VALUES (?, ?, ?)`
	if t.dialect == Postgres {
		record = `INSERT INTO ` + t.names.Migrations + ` (version, name, applied_at) VALUES ($1, $2, $3)`
	}
	// MySQL commits DDL at once, whatever the transaction; the version is recorded
	// after it, so a crash in between leaves a table that the rerun's CREATE trips on,
	// loudly, rather than a recorded version without its table.
	tx, err := t.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, body.String()); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, record, m.Version, m.Name, time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}

func appliedVersions(ctx context.Context, q migrate.Querier, n names) (map[int]bool, error) {
	return migrate.AppliedVersions(ctx, q, n.Migrations)
}

// checkSchema makes New fail early, and clearly, on a database that was not migrated.
func checkSchema(ctx context.Context, db *sql.DB, cfg Config) error {
	n := newNames(cfg.Table)
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	applied, err := appliedVersions(ctx, db, n)
	if err != nil {
		// A missing bookkeeping table is the usual reason; its error text differs by
		// driver, and any failure to read it means the same to the caller.
		return fmt.Errorf("%w: cannot read %s (%v); run inbox.Migrate first", ErrNotMigrated, n.Migrations, err)
	}
	for v := range applied {
		if v > SchemaVersion {
			return fmt.Errorf("inbox: %s is at version %d, newer than this program knows (%d)", n.Table, v, SchemaVersion)
		}
	}
	if len(applied) < SchemaVersion {
		return fmt.Errorf("%w: %s is at version %d of %d; run inbox.Migrate", ErrNotMigrated, n.Table, len(applied), SchemaVersion)
	}
	return nil
}
