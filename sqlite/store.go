// Package sqlite is the outbox Store on SQLite: one file, one process, as on a phone.
// It works on any database/sql SQLite driver (Open uses the pure-Go modernc.org/sqlite),
// shares the application's *sql.DB so that data and events commit together, and wakes
// processors in the same process as soon as events commit.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/hub"
	"github.com/fitiq/outbox/internal/sqltx"
)

// Config tunes a Store.
type Config struct {
	// MaxPayloadBytes is the largest payload Enqueue accepts. Defaults to
	// outbox.DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// Logger receives the store's log lines. Defaults to slog.Default().
	Logger *slog.Logger
	// OnEnqueue, when set, runs on every event this store enqueues, before it is
	// written: see outbox.EnqueueHook (oteloutbox's Tracing.EnqueueHook records the
	// trace an event is enqueued under).
	OnEnqueue outbox.EnqueueHook
}

// Store is an outbox.Store on a SQLite database.
type Store struct {
	db     *sql.DB
	cfg    Config
	log    *slog.Logger
	insert *sql.Stmt // insertEvent, prepared once: parsing it costs more than running it

	subs hub.Hub       // the processors to wake
	own  sqltx.Tracker // transactions run by Transact, and the users they enqueued for
}

var (
	_ outbox.Store    = (*Store)(nil)
	_ outbox.Notifier = (*Store)(nil)
)

// New returns a Store on db, which must have been migrated (see Migrate). db should be
// opened with Open, or with the settings it applies: WAL, a busy timeout, and
// immediate write transactions.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: sqlite.New: db must not be nil", outbox.ErrInvalid)
	}
	if cfg.MaxPayloadBytes < 0 {
		return nil, &outbox.FieldError{Field: "sqlite.Config.MaxPayloadBytes", Problem: fmt.Sprintf("must not be negative, got %d", cfg.MaxPayloadBytes)}
	}
	cfg.MaxPayloadBytes = cmp.Or(cfg.MaxPayloadBytes, outbox.DefaultMaxPayloadBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := checkSchema(ctx, db); err != nil {
		return nil, err
	}
	insert, err := db.PrepareContext(ctx, insertEvent)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: prepare insert: %w", err)
	}
	return &Store{
		db:     db,
		insert: insert,
		cfg:    cfg,
		log:    cfg.Logger.With("component", "outbox.sqlite"),
	}, nil
}

// DB returns the database the store works on.
func (s *Store) DB() *sql.DB { return s.db }

// Subscribe implements outbox.Notifier: the channel receives a value after a commit
// that enqueued events for userID (or for anyone, when userID is empty).
func (s *Store) Subscribe(userID string) (<-chan struct{}, func()) {
	return s.subs.Subscribe(userID)
}

// notify wakes the subscribers of the given users and those of all users; nil users
// wakes every subscriber.
func (s *Store) notify(users map[string]struct{}) { s.subs.Wake(users, users == nil) }

// Transact runs fn in a transaction and commits it when fn returns nil; it rolls back
// when fn returns an error or panics. Write your data and EnqueueTx its events inside fn, and both land or neither does. After
// the commit, processors of this store wake at once.
func (s *Store) Transact(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.own.Transact(ctx, s.db, "outbox/sqlite", fn, s.notify)
}

// EnqueueTx writes events in the caller's transaction and never commits it: roll the
// transaction back and the events are gone with the data. Each event is validated
// first, and nothing is written when any is invalid. It fills ID, Seq, Status and the
// times of each event.
func (s *Store) EnqueueTx(ctx context.Context, tx *sql.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: EnqueueTx: tx must not be nil", outbox.ErrInvalid)
	}
	return s.enqueue(ctx, tx, time.Now(), events, true)
}

// Enqueue implements outbox.Store: it writes events in a transaction of its own.
func (s *Store) Enqueue(ctx context.Context, now time.Time, events ...*outbox.Event) error {
	return s.Transact(ctx, func(tx *sql.Tx) error { return s.enqueue(ctx, tx, now, events, true) })
}

func (s *Store) enqueue(ctx context.Context, tx *sql.Tx, now time.Time, events []*outbox.Event, announce bool) error {
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("%w: event %d is nil", outbox.ErrInvalid, i)
		}
		if err := e.Prepare(now, s.cfg.MaxPayloadBytes); err != nil {
			if len(events) > 1 {
				return fmt.Errorf("event %d: %w", i, err)
			}
			return err
		}
		s.cfg.OnEnqueue.Run(ctx, e)
	}
	users := make(map[string]struct{}, 1)
	for _, e := range events {
		var metadata any
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return fmt.Errorf("outbox/sqlite: encode metadata: %w", err)
			}
			metadata = string(b)
		}
		args := []any{
			sql.Named("id", e.ID),
			sql.Named("type", e.Type),
			sql.Named("entity_id", e.EntityID),
			sql.Named("user_id", e.UserID),
			sql.Named("max_attempts", e.MaxAttempts),
			sql.Named("priority", e.Priority),
			sql.Named("is_new_record", e.IsNewRecord),
			sql.Named("metadata", metadata),
			sql.Named("payload", column.NullString(string(e.Payload))),
			sql.Named("ordering_key", column.NullString(e.OrderingKey)),
			sql.Named("now", column.Micros(e.CreatedAt)),
		}
		res, err := tx.StmtContext(ctx, s.insert).ExecContext(ctx, args...)
		if err != nil && strings.Contains(err.Error(), "statement from different database") {
			// tx belongs to another *sql.DB on the same file: database/sql refused the
			// statement before running it, so run the query text instead.
			res, err = tx.ExecContext(ctx, insertEvent, args...)
		}
		if err != nil && isUniqueViolation(err) {
			// The only unique column a caller writes is the ID.
			return fmt.Errorf("outbox/sqlite: insert event: %w", &outbox.FieldError{Field: "ID", Problem: fmt.Sprintf("%s is already used by another event", e.ID)})
		}
		if err != nil {
			return fmt.Errorf("outbox/sqlite: insert event %s: %w", e.ID, err)
		}
		if e.Seq, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("outbox/sqlite: insert event %s: %w", e.ID, err)
		}
		users[e.UserID] = struct{}{}
		s.log.Debug("event created", "event_id", e.ID, "type", e.Type, "entity_id", e.EntityID, "user_id", e.UserID)
	}
	if !announce || len(events) == 0 {
		return nil
	}
	if !s.own.Add(tx, users) {
		// The caller commits: we cannot see when. Wake processors now; their claim
		// waits on SQLite's write lock, which the caller holds until commit or rollback.
		s.notify(users)
	}
	return nil
}

// Claim implements outbox.Store.
func (s *Store) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	if p.Limit <= 0 {
		return nil, nil
	}
	var events []outbox.Event
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := column.Micros(p.Now)
		if _, err := tx.ExecContext(ctx, expireLeases,
			sql.Named("now", now), sql.Named("default_max", cmp.Or(p.DefaultMaxAttempts, outbox.DefaultMaxAttempts)),
			sql.Named("user_id", p.UserID),
			sql.Named("types", jsonTypes(p.Types)),
			sql.Named("skip_types", jsonTypes(p.SkipTypes)),
		); err != nil {
			return fmt.Errorf("expire leases: %w", err)
		}
		rows, err := tx.QueryContext(ctx, claim,
			sql.Named("now", now),
			sql.Named("owner", p.Owner),
			sql.Named("lease_until", column.Micros(p.LeaseUntil)),
			sql.Named("limit", p.Limit),
			sql.Named("user_id", p.UserID),
			sql.Named("skip_given_up", p.SkipGivenUp),
			sql.Named("types", jsonTypes(p.Types)),
			sql.Named("skip_types", jsonTypes(p.SkipTypes)),
		)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		var respelled map[int]string
		if events, respelled, err = scanStored(rows); err != nil {
			return err
		}
		return respell(ctx, tx, events, respelled)
	})
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: %w", err)
	}
	// RETURNING does not keep the subquery's order.
	slices.SortFunc(events, func(a, b outbox.Event) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), cmp.Compare(a.Seq, b.Seq))
	})
	return events, nil
}

// ExtendLease implements outbox.Store.
func (s *Store) ExtendLease(ctx context.Context, owner string, ids []string, until time.Time) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	held := make(map[string]bool, len(ids))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, extendLease,
			sql.Named("until", column.Micros(until)), sql.Named("ids", jsonIDs(ids)), sql.Named("owner", owner))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			held[id] = true
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: extend lease: %w", err)
	}
	var lost []string
	for _, id := range ids {
		if c, err := outbox.CanonicalID(id); !held[id] && (err != nil || !held[c]) {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// respell writes in the canonical spelling the IDs of claimed events that were stored
// in another (respelled, by event index: upper case, braces, … written by SQL), so
// that outcomes, lease renewals and lookups find them as every other event. An ID
// whose canonical spelling another row already holds is left as stored, and its
// event, which holds the same ID as another, is given up with the reason.
func respell(ctx context.Context, tx *sql.Tx, events []outbox.Event, respelled map[int]string) error {
	for i, stored := range respelled {
		e := &events[i]
		res, err := tx.ExecContext(ctx, respellID, sql.Named("id", e.ID), sql.Named("seq", e.Seq))
		if err != nil {
			return fmt.Errorf("event %d: write its ID %s in the canonical spelling: %w", e.Seq, column.Quote(stored), err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("event %d: write its ID %s in the canonical spelling: %w", e.Seq, column.Quote(stored), err)
		} else if n == 0 {
			var problems column.Problems
			problems.Add(e.Unusable)
			problems.Add(fmt.Sprintf("id %s is another spelling of the ID of another event", column.Quote(stored)))
			e.ID, e.Unusable = stored, problems.String()
		}
	}
	return nil
}

// Settle implements outbox.Store.
func (s *Store) Settle(ctx context.Context, owner string, now time.Time, outcomes []outbox.Outcome) error {
	var delivered, released []string
	var failed []outbox.Outcome
	var reasons map[string]string // released event ID → its reason, when it has one
	for _, o := range outcomes {
		switch o.Result {
		case outbox.Delivered:
			delivered = append(delivered, o.ID)
		case outbox.Released:
			released = append(released, o.ID)
			if o.Error != "" {
				if reasons == nil {
					reasons = make(map[string]string)
				}
				reasons[o.ID] = o.Error
				if c, err := outbox.CanonicalID(o.ID); err == nil {
					reasons[c] = o.Error
				}
			}
		case outbox.Failed:
			failed = append(failed, o)
		default:
			return fmt.Errorf("%w: outcome for %s has no result", outbox.ErrInvalid, o.ID)
		}
	}
	at := column.Micros(now)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if len(delivered) > 0 {
			if _, err := tx.ExecContext(ctx, completeEvents,
				sql.Named("now", at), sql.Named("ids", jsonIDs(delivered)), sql.Named("owner", owner)); err != nil {
				return fmt.Errorf("complete: %w", err)
			}
		}
		for _, o := range failed {
			if _, err := tx.ExecContext(ctx, failEvent,
				sql.Named("now", at), sql.Named("ids", jsonIDs([]string{o.ID})), sql.Named("id", o.ID), sql.Named("owner", owner),
				sql.Named("error", o.Error), sql.Named("next_attempt_at", column.NullMicros(o.NextAttemptAt))); err != nil {
				return fmt.Errorf("fail %s: %w", o.ID, err)
			}
		}
		if len(released) > 0 {
			if _, err := tx.ExecContext(ctx, releaseEvents, sql.Named("now", at), sql.Named("ids", jsonIDs(released)),
				sql.Named("reasons", jsonReasons(reasons)), sql.Named("owner", owner)); err != nil {
				return fmt.Errorf("release: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox/sqlite: settle: %w", err)
	}
	if len(released) > 0 {
		s.notify(nil) // released events are due again, whoever they belong to
	}
	return nil
}

// Get implements outbox.Store.
func (s *Store) Get(ctx context.Context, id string) (outbox.Event, error) {
	rows, err := s.db.QueryContext(ctx, getEvent, sql.Named("ids", lookupIDs([]string{id})), sql.Named("id", id))
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/sqlite: get %s: %w", id, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/sqlite: get %s: %w", id, err)
	}
	if len(events) == 0 {
		return outbox.Event{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	return events[0], nil
}

// List implements outbox.Store.
func (s *Store) List(ctx context.Context, f outbox.Filter) ([]outbox.Event, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	args := append(filterArgs(f), sql.Named("limit", cmp.Or(f.Limit, 100)))
	rows, err := s.db.QueryContext(ctx, listEvents, args...)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: list: %w", err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: list: %w", err)
	}
	return events, nil
}

// Update implements outbox.Store.
func (s *Store) Update(ctx context.Context, now time.Time, e *outbox.Event) error {
	if err := e.ValidateUpdate(); err != nil {
		return err
	}
	var metadata any
	if len(e.Metadata) > 0 {
		b, err := json.Marshal(e.Metadata)
		if err != nil {
			return fmt.Errorf("outbox/sqlite: encode metadata: %w", err)
		}
		metadata = string(b)
	}
	now = outbox.Timestamp(now)
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, updateEvent,
			sql.Named("ids", lookupIDs([]string{e.ID})), sql.Named("id", e.ID), sql.Named("now", column.Micros(now)),
			sql.Named("status", string(e.Status)), sql.Named("attempts", e.Attempts),
			sql.Named("max_attempts", e.MaxAttempts), sql.Named("priority", e.Priority),
			sql.Named("metadata", metadata), sql.Named("next_attempt_at", column.NullMicros(e.NextAttemptAt)),
			sql.Named("completed_at", column.NullMicros(e.CompletedAt)), sql.Named("last_error", column.NullString(e.LastError)))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox/sqlite: update %s: %w", e.ID, err)
	}
	if n == 0 {
		if _, err := s.Get(ctx, e.ID); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", outbox.ErrLeased, e.ID)
	}
	e.UpdatedAt = now
	e.LeaseOwner, e.LeaseExpiresAt = "", time.Time{}
	return nil
}

// Retry implements outbox.Store.
func (s *Store) Retry(ctx context.Context, now time.Time, f outbox.Filter) (int, error) {
	if err := f.Validate(); err != nil {
		return 0, err
	}
	if f.Status == "" && !f.GivenUp && len(f.IDs) == 0 {
		f.Status = outbox.StatusFailed
	}
	args := append(filterArgs(f), sql.Named("now", column.Micros(now)))
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, retryEvents, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: retry: %w", err)
	}
	if n > 0 && f.UserID != "" {
		s.notify(map[string]struct{}{f.UserID: {}})
	} else if n > 0 {
		s.notify(nil)
	}
	return int(n), nil
}

// Delete implements outbox.Store.
func (s *Store) Delete(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, deleteEvents, sql.Named("ids", lookupIDs(ids)))
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: delete: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// DeleteCompleted implements outbox.Store.
func (s *Store) DeleteCompleted(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: DeleteCompleted: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	res, err := s.db.ExecContext(ctx, deleteCompleted, sql.Named("before", column.Micros(before)), sql.Named("limit", limit))
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: delete completed: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// inTx runs fn in a write transaction of the store's own.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return sqltx.Run(ctx, s.db, nil, fn)
}

// SQLite's extended result codes for a unique constraint and a primary key refused.
const (
	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
)

// isUniqueViolation matches the driver's error by its result code.
func isUniqueViolation(err error) bool {
	c, _ := resultCode(err)
	return c == sqliteConstraintUnique || c == sqliteConstraintPrimaryKey
}

// resultCode is the (extended) result code of the driver's error, and whether it has
// one: drivers that expose it as a Code method (modernc.org/sqlite does) are understood.
func resultCode(err error) (int, bool) {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return 0, false
	}
	return coded.Code(), true
}
