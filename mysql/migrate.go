package mysql

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/fitiq/outbox/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded files; their SQL is a template that names the table
// ({{.Table}}), filled in from a Config.
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
var ErrNotMigrated = errors.New("outbox/mysql: schema not migrated")

// migrateLockTimeout bounds the wait for another migrating process, in seconds.
const migrateLockTimeout = 300

// Migrate brings the outbox table named by cfg to SchemaVersion, in db's current
// database, and returns the versions it applied. It is safe to run on an up-to-date
// database, and by several relays at once: they take turns on a named lock
// (GET_LOCK), and the ones that come second find nothing to do.
//
// MySQL commits DDL implicitly, so a migration and its bookkeeping row cannot share
// a transaction: each migration file is written as statements that are each atomic,
// and its version is recorded after the last one succeeded.
func Migrate(ctx context.Context, db *sql.DB, cfg Config) ([]int, error) {
	if db == nil {
		return nil, configError("db", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: migrate: %w", err)
	}
	defer conn.Close()
	var database sql.NullString
	if err := conn.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&database); err != nil {
		return nil, fmt.Errorf("outbox/mysql: migrate: %w", err)
	}
	if !database.Valid {
		return nil, fmt.Errorf("%w: outbox/mysql: migrate: the connection has no current database; name one in the DSN", ErrNotMigrated)
	}
	// A session lock, held across the migrations; the server drops it with the
	// session if this process dies half-way. Lock names are limited to 64 characters.
	sum := sha256.Sum256([]byte(database.String + "." + cfg.Table))
	lock := fmt.Sprintf("outbox_migrate_%x", sum[:12])
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, ?)`, lock, migrateLockTimeout).Scan(&got); err != nil {
		return nil, fmt.Errorf("outbox/mysql: migrate: take lock %s: %w", lock, err)
	}
	if got.Int64 != 1 {
		return nil, fmt.Errorf("outbox/mysql: migrate: lock %s still held by another migration after %ds", lock, migrateLockTimeout)
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, lock); err != nil {
			// The connection is broken, and the lock went with its session; do not
			// hand the connection back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()

	done, err := migrate.Run(ctx, target{conn: conn, names: newNames(cfg)}, migrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("outbox/mysql: %w", err)
	}
	return versions, nil
}

type target struct {
	conn  *sql.Conn
	names names
}

func (t target) Applied(ctx context.Context) (map[int]bool, error) {
	if _, err := t.conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t.names.Migrations+` (
    version    INT          NOT NULL PRIMARY KEY,
    name       VARCHAR(255) NOT NULL,
    applied_at BIGINT       NOT NULL  -- Unix microseconds
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`); err != nil {
		return nil, err
	}
	return appliedVersions(ctx, t.conn, t.names)
}

func (t target) Apply(ctx context.Context, m migrate.Migration) error {
	var text bytes.Buffer
	if err := migrationTemplates[m.Version].Execute(&text, t.names); err != nil {
		return err
	}
	for _, stmt := range splitStatements(text.String()) {
		if _, err := t.conn.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	_, err := t.conn.ExecContext(ctx, `INSERT INTO `+t.names.Migrations+` (version, name, applied_at)
VALUES (?, ?, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED))`, m.Version, m.Name)
	return err
}

// splitStatements cuts a migration at lines ending in ";", dropping comment-only
// lines, so that no DSN needs multiStatements.
func splitStatements(text string) []string {
	var stmts []string
	var cur strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

func appliedVersions(ctx context.Context, q migrate.Querier, n names) (map[int]bool, error) {
	return migrate.AppliedVersions(ctx, q, n.Migrations)
}

// checkSchema makes New fail early, and clearly, on a database that was not migrated.
func checkSchema(ctx context.Context, db *sql.DB, n names) error {
	applied, err := appliedVersions(ctx, db, n)
	if errorNumber(err) == erNoSuchTable {
		return fmt.Errorf("%w: %s does not exist; run mysql.Migrate (or `outbox migrate`) first", ErrNotMigrated, n.Migrations)
	}
	if err != nil {
		return fmt.Errorf("outbox/mysql: read schema version: %w", err)
	}
	for v := range applied {
		if v > SchemaVersion {
			return fmt.Errorf("outbox/mysql: %s is at version %d, newer than this program knows (%d)", n.Table, v, SchemaVersion)
		}
	}
	if len(applied) < SchemaVersion {
		return fmt.Errorf("%w: %s is at version %d of %d; run mysql.Migrate (or `outbox migrate`)", ErrNotMigrated, n.Table, len(applied), SchemaVersion)
	}
	return nil
}
