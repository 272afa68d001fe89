package migrate

import (
	"context"
	"database/sql"
	"time"
)

// SQLTarget is a Target on a database/sql database (SQLite, or PostgreSQL through pgx's
// stdlib driver) that records applied versions in the table named Table. Table is a
// constant of the calling package, never user input: it is written into the SQL as is.
type SQLTarget struct {
	DB    *sql.DB
	Table string
}

// Applied implements Target.
func (t SQLTarget) Applied(ctx context.Context) (map[int]bool, error) {
	if _, err := t.DB.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t.Table+` (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL  -- Unix microseconds
)`); err != nil {
		return nil, err
	}
	return AppliedVersions(ctx, t.DB, t.Table)
}

// Querier is what AppliedVersions reads with: a *sql.DB, *sql.Conn or *sql.Tx.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// AppliedVersions reads the versions recorded in the bookkeeping table (a constant of
// the calling package, written into the SQL as is). Stores call it from their Target
// and to check, at New, that a database is migrated.
func AppliedVersions(ctx context.Context, q Querier, table string) (map[int]bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT version FROM `+table)
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

// Apply implements Target.
func (t SQLTarget) Apply(ctx context.Context, m Migration) error {
	tx, err := t.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.Table+` (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.Version, m.Name, time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}
