package backend

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/httpinbox"
	"github.com/fitiq/outbox/internal/migrate"
	"github.com/fitiq/outbox/sqlite"
)

//go:embed migrations
var migrationFiles embed.FS

func loadMigrations(dir string) []migrate.Migration {
	ms, err := migrate.Load(migrationFiles, dir)
	if err != nil {
		panic(err) // the embedded files are part of the build; a bad name is a bug every test catches
	}
	return ms
}

var (
	sqliteMigrations   = loadMigrations("migrations/sqlite")
	postgresMigrations = loadMigrations("migrations/postgres")
)

// OpenConfig names the backend's database.
type OpenConfig struct {
	// DSN selects the database: a "postgres://" or "postgresql://" URL is PostgreSQL
	// (through pgx); anything else is the path of a SQLite file, with an optional
	// "sqlite:" prefix. Required.
	DSN string
	// Schema is the PostgreSQL schema that holds the tables, created when missing.
	// Defaults to "public". Not used with SQLite.
	Schema string
}

// DB is the backend's database: SQLite or PostgreSQL, behind the same queries.
type DB struct {
	db       *sql.DB
	postgres bool
	schema   string
}

// Open opens the database cfg names. Call Migrate before serving from it.
func Open(ctx context.Context, cfg OpenConfig) (*DB, error) {
	dsn := strings.TrimSpace(cfg.DSN)
	if dsn == "" {
		return nil, fmt.Errorf("%w: backend.OpenConfig.DSN must not be empty", fitiq.ErrInvalid)
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		db, err := sqlite.Open(strings.TrimPrefix(dsn, "sqlite:"), sqlite.OpenConfig{})
		if err != nil {
			return nil, fmt.Errorf("fitiq/backend: %w", err)
		}
		return &DB{db: db}, nil
	}
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: backend.OpenConfig.DSN: %v", fitiq.ErrInvalid, err)
	}
	schema := cmp.Or(cfg.Schema, "public")
	if len(schema) > 63 {
		return nil, fmt.Errorf("%w: backend.OpenConfig.Schema %q is over PostgreSQL's 63-byte limit", fitiq.ErrInvalid, schema)
	}
	quoted := pgx.Identifier{schema}.Sanitize()
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("fitiq/backend: connect: %w", err)
	}
	_, err = conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+quoted)
	conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("fitiq/backend: create schema %s: %w", quoted, err)
	}
	// Every pooled connection starts in the schema: the queries name tables unqualified.
	pc.RuntimeParams["search_path"] = quoted
	db := stdlib.OpenDB(*pc)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("fitiq/backend: ping: %w", err)
	}
	return &DB{db: db, postgres: true, schema: schema}, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Dialect is "sqlite" or "postgres".
func (d *DB) Dialect() string {
	if d.postgres {
		return "postgres"
	}
	return "sqlite"
}

// Migrate brings the schema to the current version and returns the versions applied.
func (d *DB) Migrate(ctx context.Context) ([]int, error) {
	ms := sqliteMigrations
	if d.postgres {
		ms = postgresMigrations
	}
	done, err := migrate.Run(ctx, migrationTarget(d.db), ms)
	if err == nil {
		_, err = inbox.Migrate(ctx, d.db, d.inboxConfig()) // the event IDs of the requests (see Server.ServeHTTP)
	}
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("fitiq/backend: %w", err)
	}
	return versions, nil
}

// migrationTarget records the backend's schema versions.
func migrationTarget(db *sql.DB) migrate.SQLTarget {
	return migrate.SQLTarget{DB: db, Table: "fitiq_backend_migrations"}
}

// ErrUnknownToken is returned for a bearer token the backend has not issued.
var ErrUnknownToken = errors.New("fitiq/backend: unknown token")

func tokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// AddToken lets token authenticate userID. Adding a token twice for the same user is
// harmless; a token that already belongs to another user is an error.
func (d *DB) AddToken(ctx context.Context, userID, token string) error {
	switch {
	case userID == "":
		return &fitiq.FieldError{Field: "user", Problem: "must not be empty"}
	case len(token) < 16:
		return &fitiq.FieldError{Field: "token", Problem: "must be at least 16 characters"}
	}
	digest := tokenDigest(token)
	if _, err := d.db.ExecContext(ctx, insertToken, digest, userID, time.Now().UnixMicro()); err != nil {
		return fmt.Errorf("fitiq/backend: add token: %w", err)
	}
	owner, err := d.TokenUser(ctx, token)
	if err != nil {
		return err
	}
	if owner != userID {
		return fmt.Errorf("%w: token: already issued to another user", fitiq.ErrInvalid)
	}
	return nil
}

// TokenUser returns the user token authenticates, or ErrUnknownToken.
func (d *DB) TokenUser(ctx context.Context, token string) (string, error) {
	var user string
	err := d.db.QueryRowContext(ctx, selectTokenUser, tokenDigest(token)).Scan(&user)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrUnknownToken
	}
	if err != nil {
		return "", fmt.Errorf("fitiq/backend: look up token: %w", err)
	}
	return user, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRecord(row scanner) (fitiq.RemoteRecord, error) {
	var (
		r                    fitiq.RemoteRecord
		kind                 string
		at, created, updated int64
		data                 []byte
	)
	if err := row.Scan(&r.BackendID, &kind, &r.ID, &r.Version, &r.Type, &at, &data, &created, &updated); err != nil {
		return r, err
	}
	r.Kind = fitiq.Kind(kind)
	r.Date = time.UnixMicro(at).UTC()
	r.CreatedAt, r.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	r.Data = data
	return r, nil
}

// Insert stores r for userID unless the user has an entity of that kind and client ID
// already: then it returns the stored record and created false. Two concurrent
// inserts of one ID store one row (the UNIQUE constraint decides).
func (d *DB) Insert(ctx context.Context, userID string, r fitiq.RemoteRecord) (stored fitiq.RemoteRecord, created bool, err error) {
	var id string
	err = d.exec(ctx).QueryRowContext(ctx, insertRecord, r.BackendID, userID, string(r.Kind), r.ID, r.Version, r.Type,
		r.Date.UnixMicro(), string(r.Data), r.CreatedAt.UnixMicro(), r.UpdatedAt.UnixMicro()).Scan(&id)
	switch {
	case err == nil:
		return r, true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return r, false, fmt.Errorf("fitiq/backend: insert %s %s: %w", r.Kind, r.ID, err)
	}
	stored, err = d.Get(ctx, userID, r.Kind, r.ID)
	return stored, false, err
}

// Update stores r over userID's existing record of that kind and client ID when r's
// version is newer than the stored one; a replay (same or older version) changes nothing. It returns the record as now
// stored and applied whether r was written; fitiq.ErrNotFound when there is no record.
func (d *DB) Update(ctx context.Context, userID string, r fitiq.RemoteRecord) (stored fitiq.RemoteRecord, applied bool, err error) {
	stored, err = scanRecord(d.exec(ctx).QueryRowContext(ctx, updateRecord, userID, string(r.Kind), r.ID, r.Version, r.Type,
		r.Date.UnixMicro(), string(r.Data), r.UpdatedAt.UnixMicro()))
	switch {
	case err == nil:
		return stored, true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return r, false, fmt.Errorf("fitiq/backend: update %s %s: %w", r.Kind, r.ID, err)
	}
	stored, err = d.Get(ctx, userID, r.Kind, r.ID)
	return stored, false, err
}

// exec is the request's inbox transaction when it has one, so that the write commits
// together with the event's ID, or else the database.
func (d *DB) exec(ctx context.Context) interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
} {
	if tx := httpinbox.Tx(ctx); tx != nil {
		return tx
	}
	return d.db
}

// Get returns userID's record of kind k with the client's ID id, or fitiq.ErrNotFound.
func (d *DB) Get(ctx context.Context, userID string, k fitiq.Kind, id string) (fitiq.RemoteRecord, error) {
	r, err := scanRecord(d.db.QueryRowContext(ctx, selectRecord, userID, string(k), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%w: %s %s", fitiq.ErrNotFound, k, id)
	}
	if err != nil {
		return r, fmt.Errorf("fitiq/backend: get %s %s: %w", k, id, err)
	}
	return r, nil
}

// History returns one page of userID's records of kind k matching q (defaults filled
// by fitiq.ParseHistoryQuery), most recent first.
func (d *DB) History(ctx context.Context, userID string, k fitiq.Kind, q fitiq.HistoryQuery) (fitiq.HistoryPage, error) {
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.From.IsZero() {
		from = q.From.UnixMicro()
	}
	if !q.To.IsZero() {
		to = q.To.UnixMicro()
	}
	page := fitiq.HistoryPage{Items: []fitiq.RemoteRecord{}, Page: q.Page, Limit: q.Limit}
	if err := d.db.QueryRowContext(ctx, countHistory, userID, string(k), q.Type, from, to).Scan(&page.Total); err != nil {
		return page, fmt.Errorf("fitiq/backend: history: %w", err)
	}
	rows, err := d.db.QueryContext(ctx, selectHistory, userID, string(k), q.Type, from, to, q.Limit, (q.Page-1)*q.Limit)
	if err != nil {
		return page, fmt.Errorf("fitiq/backend: history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return page, fmt.Errorf("fitiq/backend: history: %w", err)
		}
		page.Items = append(page.Items, r)
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("fitiq/backend: history: %w", err)
	}
	page.HasMore = q.Page*q.Limit < page.Total
	return page, nil
}

// Counts is how many records the backend holds, and how many distinct client IDs they
// carry: equal numbers mean no entity is held twice.
type Counts struct {
	Records     int                `json:"records"`
	DistinctIDs int                `json:"distinct_ids"`
	ByKind      map[fitiq.Kind]int `json:"by_kind"`
}

// Count counts userID's records (all users when empty).
func (d *DB) Count(ctx context.Context, userID string) (Counts, error) {
	c := Counts{ByKind: map[fitiq.Kind]int{}}
	rows, err := d.db.QueryContext(ctx, countRecords, userID)
	if err != nil {
		return c, fmt.Errorf("fitiq/backend: count: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n, distinct int
		if err := rows.Scan(&kind, &n, &distinct); err != nil {
			return c, fmt.Errorf("fitiq/backend: count: %w", err)
		}
		c.ByKind[fitiq.Kind(kind)] = n
		c.Records += n
		c.DistinctIDs += distinct
	}
	return c, rows.Err()
}
