package fitiq

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
		panic(err) // the embedded files are part of the build; a bad name is a bug every test catches
	}
	return ms
}()

// Migrate brings db's FitIQ tables to the current version and returns the versions it
// applied. Run it beside sqlite.Migrate (the outbox's own tables) on the same file;
// each keeps its own version table, so either can be upgraded without the other.
func Migrate(ctx context.Context, db *sql.DB) ([]int, error) {
	done, err := migrate.Run(ctx, migrationTarget(db), migrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("fitiq: %w", err)
	}
	return versions, nil
}

// ErrNotMigrated is returned by NewLocal when the FitIQ tables are missing or older
// than this program: run Migrate first.
var ErrNotMigrated = errors.New("fitiq: local schema not migrated")

// migrationTarget records the FitIQ tables' schema versions.
func migrationTarget(db *sql.DB) migrate.SQLTarget {
	return migrate.SQLTarget{DB: db, Table: "fitiq_schema_migrations"}
}

// Local is the app's local database: the tables of the five kinds, in the same SQLite
// file as the outbox. Writes go through the use cases (which enqueue the event in the
// same transaction); Local reads, and records what the backend answered.
type Local struct {
	db *sql.DB
}

// NewLocal returns the repositories on db, which Migrate must have brought up to date.
func NewLocal(ctx context.Context, db *sql.DB) (*Local, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: NewLocal: db must not be nil", ErrInvalid)
	}
	applied, err := migrationTarget(db).Applied(ctx)
	if err != nil {
		return nil, fmt.Errorf("fitiq: read schema version: %w", err)
	}
	if len(applied) < len(migrations) {
		return nil, fmt.Errorf("%w: at version %d of %d", ErrNotMigrated, len(applied), len(migrations))
	}
	return &Local{db: db}, nil
}

// DB returns the database Local reads.
func (l *Local) DB() *sql.DB { return l.db }

// Get returns the entity of kind k with the given ID, or ErrNotFound.
func (l *Local) Get(ctx context.Context, k Kind, id string) (Entity, error) {
	t, err := tableOf(k)
	if err != nil {
		return nil, err
	}
	return t.get(ctx, l.db, id)
}

// List returns up to limit entities of kind k saved by userID, most recent date first
// (profiles: the one there is). limit <= 0 means all.
func (l *Local) List(ctx context.Context, k Kind, userID string, limit int) ([]Entity, error) {
	t, err := tableOf(k)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := l.db.QueryContext(ctx, t.list, sql.Named("user_id", userID), sql.Named("limit", limit))
	if err != nil {
		return nil, fmt.Errorf("fitiq: list %s: %w", k, err)
	}
	defer rows.Close()
	var out []Entity
	for rows.Next() {
		e, err := t.scan(rows)
		if err != nil {
			return nil, fmt.Errorf("fitiq: list %s: %w", k, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fitiq: list %s: %w", k, err)
	}
	return out, nil
}

// MarkSynced records that the backend holds version of the entity under backendID. The
// status becomes synced only when version is still the latest local one: a save that
// happened while the delivery was in flight keeps the entity pending, and its own
// event will carry it.
func (l *Local) MarkSynced(ctx context.Context, k Kind, id, backendID string, version int64) error {
	t, err := tableOf(k)
	if err != nil {
		return err
	}
	res, err := l.db.ExecContext(ctx, t.markSynced, sql.Named("id", id),
		sql.Named("backend_id", backendID), sql.Named("version", version))
	if err != nil {
		return fmt.Errorf("fitiq: mark %s %s synced: %w", k, id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%w: %s %s", ErrNotFound, k, id)
	}
	return nil
}

// MarkFailed records that the backend refused version of the entity for good.
func (l *Local) MarkFailed(ctx context.Context, k Kind, id string, version int64) error {
	t, err := tableOf(k)
	if err != nil {
		return err
	}
	if _, err := l.db.ExecContext(ctx, t.markFailed, sql.Named("id", id), sql.Named("version", version)); err != nil {
		return fmt.Errorf("fitiq: mark %s %s failed: %w", k, id, err)
	}
	return nil
}

// SyncCounts is how many entities of a kind stand where with the backend.
type SyncCounts struct {
	Total   int `json:"total"`
	Pending int `json:"pending"`
	Synced  int `json:"synced"`
	Failed  int `json:"failed"`
	// WithBackendID counts entities the backend has acknowledged at least once.
	WithBackendID int `json:"with_backend_id"`
}

// SyncCounts counts userID's entities by sync status, per kind (all users when empty).
func (l *Local) SyncCounts(ctx context.Context, userID string) (map[Kind]SyncCounts, error) {
	out := make(map[Kind]SyncCounts, len(Kinds))
	for _, k := range Kinds {
		t := tables[k]
		rows, err := l.db.QueryContext(ctx, t.syncCounts, sql.Named("user_id", userID))
		if err != nil {
			return nil, fmt.Errorf("fitiq: count %s: %w", k, err)
		}
		var c SyncCounts
		for rows.Next() {
			var status string
			var n, withID int
			if err := rows.Scan(&status, &n, &withID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("fitiq: count %s: %w", k, err)
			}
			c.Total += n
			c.WithBackendID += withID
			switch SyncStatus(status) {
			case SyncPending:
				c.Pending += n
			case SyncSynced:
				c.Synced += n
			case SyncFailed:
				c.Failed += n
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("fitiq: count %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// save writes e in tx: an insert when no entity has its ID yet (isNew), an update
// otherwise. It sets e's Version, sync status and times. An entity of another user
// with the same ID is an error, never overwritten.
func (l *Local) save(ctx context.Context, tx *sql.Tx, e Entity, now time.Time) (isNew bool, err error) {
	t, err := tableOf(e.Kind())
	if err != nil {
		return false, err
	}
	r := e.Base()
	var owner string
	var version, created int64
	err = tx.QueryRowContext(ctx, t.lookup, sql.Named("id", r.ID)).Scan(&owner, &version, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		isNew = true
		r.Version, r.CreatedAt = 1, now
	case err != nil:
		return false, fmt.Errorf("fitiq: look up %s %s: %w", e.Kind(), r.ID, err)
	case owner != r.UserID:
		return false, fmt.Errorf("%w: %s %s belongs to another user", ErrNotFound, e.Kind(), r.ID)
	default:
		r.Version, r.CreatedAt = version+1, time.UnixMicro(created).UTC()
	}
	r.UpdatedAt, r.SyncStatus = now, SyncPending
	args := append(t.args(e),
		sql.Named("id", r.ID), sql.Named("user_id", r.UserID), sql.Named("version", r.Version),
		sql.Named("now", now.UnixMicro()))
	query := t.update
	if isNew {
		query = t.insert
	}
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		return false, fmt.Errorf("fitiq: save %s %s: %w", e.Kind(), r.ID, err)
	}
	return isNew, nil
}

// profileID returns the ID of userID's existing profile row of kind k, or "".
func (l *Local) profileID(ctx context.Context, tx *sql.Tx, k Kind, userID string) (string, error) {
	t, err := tableOf(k)
	if err != nil {
		return "", err
	}
	var id string
	err = tx.QueryRowContext(ctx, t.byUser, sql.Named("user_id", userID)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("fitiq: look up %s of %s: %w", k, userID, err)
	}
	return id, nil
}
