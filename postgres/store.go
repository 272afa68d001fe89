// Package postgres is the outbox Store on PostgreSQL, through pgx v5: the store to use
// when several relays (processes, machines) deliver from one database.
//
// Events are written in the caller's transaction (EnqueueTx for a pgx.Tx, EnqueueSQLTx
// for a database/sql transaction on pgx's stdlib driver), so that data and events
// commit together. Relays claim due events with FOR UPDATE SKIP LOCKED under a lease,
// in one statement, and never hold two events of one ordering key at once. A commit
// that enqueues wakes idle relays at once through NOTIFY (sent so that writers do not
// queue on PostgreSQL's notification lock: see EnqueueTx); the poll interval is only
// the fallback.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/sqltx"
)

// Store is an outbox.Store and outbox.Notifier on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger
	q    queries

	idIndex, keyInFlightIndex string // constraint names, as errors report them

	// claimConflicts counts claims run again after losing a race for an ordering key.
	claimConflicts atomic.Int64
	lastReset      atomic.Int64 // when abandoned last reset the pool, Unix ns

	wake *wakeups // NOTIFY and LISTEN: see wake.go

	own sqltx.TrackerOf[pgx.Tx, ownTx] // transactions run by Transact, and what they enqueued for

	claims claimStatements // claim statements with their limit written in
}

var (
	_ outbox.Store    = (*Store)(nil)
	_ outbox.Notifier = (*Store)(nil)
)

// New returns a Store on pool for the outbox table cfg names, which must have been
// migrated (see Migrate): otherwise it fails with ErrNotMigrated. The pool stays the
// caller's (Close stops only what the store started: its LISTEN connection), but the
// store resets it after a silent connection: when a Claim, ExtendLease, Settle or
// Stats fails at its context's deadline (a connection gone silent, as in a failover,
// or a statement slower than the deadline), it calls pool.Reset, at most once a
// second, so that the pool's other connections, likely as dead, do not each cost a
// caller another deadline. Idle connections close at once and those in use when
// released, so no transaction in flight is cut, but whoever shares the pool dials new
// ones. To keep the store off a pool the application uses, give it one of its own.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, configError("pool", "must not be nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := newNames(cfg)
	if err := checkSchema(ctx, pool, n); err != nil {
		return nil, err
	}
	s := &Store{
		pool:             pool,
		cfg:              cfg,
		log:              cfg.Logger.With("component", "outbox.postgres", "table", cfg.Schema+"."+cfg.Table),
		q:                newQueries(n, !cfg.DisableNotify),
		idIndex:          cfg.Table + "_id_key",
		keyInFlightIndex: cfg.Table + "_key_in_flight",
	}
	s.wake = newWakeups(pool, s.q, cfg, s.log)
	return s, nil
}

// Config returns the store's configuration, defaults filled in: WatchInterval too, so
// a copy given another NotifyDebounce keeps this store's WatchInterval unless that is
// set back to zero.
func (s *Store) Config() Config { return s.cfg }

// Pool returns the pool the store works on.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close sends the NOTIFYs still gathered from the store's own commits, stops its LISTEN
// connection and waits for its goroutines. Subscribers are then woken only by this
// store's own commits. The pool is left open; Close it after the store.
func (s *Store) Close() {
	s.wake.close()
}

// Transact runs fn in a transaction and commits it when fn returns nil; it rolls back
// when fn returns an error or panics. Write your data and EnqueueTx its events inside fn, and both land or neither does.
func (s *Store) Transact(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.own.Transact(ctx, s.pool.Begin, pgxEnd, "outbox/postgres", fn, func(o *ownTx) {
		s.wake.transacted(o.users, o.unnotified)
	})
}

// pgxEnd ends the transactions of Transact.
var pgxEnd = sqltx.End[pgx.Tx]{
	Commit:   func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
	Rollback: func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) },
	Done:     pgx.ErrTxClosed,
}

// EnqueueTx writes events in the caller's transaction and never commits it: roll the
// transaction back and the events are gone with the data. Every event is validated
// first, and nothing is written when any is invalid; a batch is one INSERT. Relays
// are woken once the transaction commits, and not if it rolls back: an enqueue after a
// quiet spell (none for Config.WatchInterval) sends its NOTIFY inside the transaction,
// which PostgreSQL delivers at commit. The others are notified by the store: in a
// transaction of Transact right after the commit; in the caller's own transaction once
// the store sees the events committed, which it looks for shortly after (see
// wake.go). It fills ID, Seq, Status and the times of each event.
func (s *Store) EnqueueTx(ctx context.Context, tx pgx.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: EnqueueTx: tx must not be nil", outbox.ErrInvalid)
	}
	own := s.own.Running(tx)
	now := time.Now()
	inTx := s.wake.notifyInTx(now)
	users, err := s.insert(ctx, now, events, inTx, queryPgx(ctx, tx))
	if err != nil {
		return err
	}
	if !own {
		s.wake.watchUnlessNotified(now, inTx, events)
		return nil
	}
	s.own.Add(tx, func(o *ownTx) { // unless it ended meanwhile
		if o.users == nil {
			o.users, o.unnotified = map[string]struct{}{}, map[string]struct{}{}
		}
		for u := range users {
			o.users[u] = struct{}{}
			if !inTx {
				o.unnotified[u] = struct{}{}
			}
		}
	})
	return nil
}

// ownTx is what a transaction of Transact enqueued for: the users whose processors in
// this process are woken after the commit, and those of them whose NOTIFY did not go
// inside the transaction, which the store sends after the commit.
type ownTx struct{ users, unnotified map[string]struct{} }

// EnqueueSQLTx is EnqueueTx for a database/sql transaction. The *sql.DB must use pgx's
// stdlib driver (stdlib.OpenDBFromPool, or sql.Open("pgx", dsn)).
func (s *Store) EnqueueSQLTx(ctx context.Context, tx *sql.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: EnqueueSQLTx: tx must not be nil", outbox.ErrInvalid)
	}
	now := time.Now()
	inTx := s.wake.notifyInTx(now)
	if _, err := s.insert(ctx, now, events, inTx, querySQL(ctx, tx)); err != nil {
		return err
	}
	s.wake.watchUnlessNotified(now, inTx, events)
	return nil
}

// Enqueue implements outbox.Store: it writes events in one statement, its own
// transaction, and then notifies relays.
func (s *Store) Enqueue(ctx context.Context, now time.Time, events ...*outbox.Event) error {
	users, err := s.insert(ctx, now, events, false, queryPgx(ctx, s.pool))
	if err != nil {
		return err
	}
	s.wake.committed(users)
	return nil
}

// runInsert runs an insert statement and returns the seq of each ID it inserted;
// one, when set, runs the single-event insertOne instead and returns its seq.
type runInsert struct {
	many func(query string, args pgx.NamedArgs) (map[[16]byte]int64, error)
	one  func(query string, args ...any) (int64, error)
}

// queryPgx runs inserts on a pgx.Tx or the pool.
func queryPgx(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) runInsert {
	return runInsert{many: func(query string, args pgx.NamedArgs) (map[[16]byte]int64, error) {
		rows, err := q.Query(ctx, query, args)
		if err != nil {
			return nil, err
		}
		seqs := map[[16]byte]int64{}
		var (
			id  pgtype.UUID
			seq int64
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
			seqs[id.Bytes] = seq
			return nil
		})
		return seqs, err
	}, one: func(query string, args ...any) (int64, error) {
		rows, err := q.Query(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	}}
}

// errNotPgxStdlib is what EnqueueSQLTx says when its transaction is not pgx's.
var errNotPgxStdlib = fmt.Errorf("%w: EnqueueSQLTx needs a transaction of a *sql.DB on pgx's stdlib driver "+
	"(stdlib.OpenDBFromPool, or sql.Open(\"pgx\", dsn)); use EnqueueTx with a pgx.Tx otherwise", outbox.ErrInvalid)

// sqlNamedArgs carries pgx.NamedArgs through database/sql. pgx's stdlib driver takes
// any argument as is and sees a QueryRewriter; any other driver converts it through
// Value, which says what EnqueueSQLTx needs instead of "unsupported type".
type sqlNamedArgs struct{ pgx.NamedArgs }

func (a sqlNamedArgs) RewriteQuery(ctx context.Context, conn *pgx.Conn, sql string, args []any) (string, []any, error) {
	return a.NamedArgs.RewriteQuery(ctx, conn, sql, args)
}

func (sqlNamedArgs) Value() (driver.Value, error) { return nil, errNotPgxStdlib }

// querySQL runs inserts on a database/sql transaction; pgx's stdlib driver passes
// the named arguments through, and returns a UUID as its string.
func querySQL(ctx context.Context, tx *sql.Tx) runInsert {
	return runInsert{many: func(query string, args pgx.NamedArgs) (map[[16]byte]int64, error) {
		rows, err := tx.QueryContext(ctx, query, sqlNamedArgs{args})
		if errors.Is(err, errNotPgxStdlib) {
			return nil, errNotPgxStdlib
		}
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		seqs := map[[16]byte]int64{}
		for rows.Next() {
			var (
				id  string
				seq int64
			)
			if err := rows.Scan(&id, &seq); err != nil {
				return nil, err
			}
			u, err := uuid.Parse(id)
			if err != nil {
				return nil, fmt.Errorf("inserted event ID %q: %w", id, err)
			}
			seqs[u] = seq
		}
		return seqs, rows.Err()
	}}
}

// insert writes events with run; notify sends the NOTIFY in the same statement (unless
// Config.DisableNotify).
func (s *Store) insert(ctx context.Context, now time.Time, events []*outbox.Event, notify bool, run runInsert) (map[string]struct{}, error) {
	for i, e := range events {
		if e == nil {
			return nil, fmt.Errorf("%w: event %d is nil", outbox.ErrInvalid, i)
		}
		err := e.Prepare(now, s.cfg.MaxPayloadBytes)
		if err == nil {
			err = checkText(e)
		}
		if err != nil {
			if len(events) > 1 {
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
			return nil, err
		}
		// One spelling of each ID, so that what the caller holds is what Get returns.
		e.ID = uuid.MustParse(e.ID).String()
		s.cfg.OnEnqueue.Run(ctx, e)
	}
	if len(events) == 0 {
		return nil, nil
	}
	users := make(map[string]struct{}, 1)
	ids := make([]pgtype.UUID, len(events))
	metadata := make([]*string, len(events))
	for i, e := range events {
		ids[i] = pgtype.UUID{Bytes: uuid.MustParse(e.ID), Valid: true}
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("outbox/postgres: encode metadata: %w", err)
			}
			m := string(b)
			metadata[i] = &m
		}
		users[e.UserID] = struct{}{}
	}
	created := ts(events[0].CreatedAt)
	var (
		query string
		args  pgx.NamedArgs
	)
	if len(events) == 1 && !notify && run.one != nil {
		e := events[0]
		seq, err := run.one(s.q.insertQuiet, ids[0], e.Type, e.EntityID, e.UserID, e.MaxAttempts, e.Priority,
			e.IsNewRecord, metadata[0], nullString(string(e.Payload)), nullString(e.OrderingKey), created)
		if err != nil {
			return nil, s.enqueueError(err)
		}
		e.Seq = seq
		s.logCreated(ctx, events)
		return users, nil
	}
	if len(events) == 1 {
		e := events[0]
		query = s.q.insertEvent
		if !notify {
			query = s.q.insertQuietNamed
		}
		args = pgx.NamedArgs{
			"id": ids[0], "type": e.Type, "entity_id": e.EntityID, "user_id": e.UserID,
			"max_attempts": e.MaxAttempts, "priority": e.Priority, "is_new_record": e.IsNewRecord,
			"metadata": metadata[0], "payload": nullString(string(e.Payload)),
			"ordering_key": nullString(e.OrderingKey), "now": created,
		}
	} else {
		n := len(events)
		types, entities, userIDs := make([]string, n), make([]string, n), make([]string, n)
		maxAttempts, priorities := make([]int32, n), make([]int32, n)
		isNew := make([]bool, n)
		payloads, keys := make([]*string, n), make([]*string, n)
		for i, e := range events {
			types[i], entities[i], userIDs[i] = e.Type, e.EntityID, e.UserID
			maxAttempts[i], priorities[i] = int32(e.MaxAttempts), int32(e.Priority)
			isNew[i] = e.IsNewRecord
			payloads[i], keys[i] = nullString(string(e.Payload)), nullString(e.OrderingKey)
		}
		query = s.q.insertEvents
		if !notify {
			query = s.q.insertBatchQuiet
		}
		args = pgx.NamedArgs{
			"ids": ids, "types": types, "entity_ids": entities, "user_ids": userIDs,
			"max_attempts": maxAttempts, "priorities": priorities, "is_new_records": isNew,
			"metadata": metadata, "payloads": payloads, "ordering_keys": keys, "now": created,
		}
	}
	if notify && !s.cfg.DisableNotify {
		args["channel"] = s.cfg.Channel
	}
	seqs, err := run.many(query, args)
	if err != nil {
		return nil, s.enqueueError(err)
	}
	for i, e := range events {
		e.Seq = seqs[ids[i].Bytes]
	}
	s.logCreated(ctx, events)
	return users, nil
}

// logCreated logs each event written, when the store's logger is at debug level.
func (s *Store) logCreated(ctx context.Context, events []*outbox.Event) {
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	for _, e := range events {
		s.log.Debug("event created", "event_id", e.ID, "type", e.Type, "entity_id", e.EntityID, "user_id", e.UserID)
	}
}

// Claim implements outbox.Store. See claimEvents for the statement. A claim that loses
// a race for an ordering key to another relay (the database refuses a second event of
// the key in flight) is run again, and then sees the winner's claim.
func (s *Store) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	query, args, err := s.claimStatement(p)
	if err != nil || query == "" {
		return nil, err
	}
	const maxTries = 10
	for try := 1; ; try++ {
		events, err := s.claim(ctx, s.pool, query, args)
		if err == nil {
			return events, nil
		}
		if try < maxTries && s.isClaimConflict(err) && ctx.Err() == nil {
			s.claimConflicts.Add(1)
			s.log.Debug("claim raced another relay for an ordering key; claiming again", "err", err)
			continue
		}
		s.abandoned(ctx, err)
		return nil, fmt.Errorf("outbox/postgres: claim: %w", err)
	}
}

func (s *Store) claimStatement(p outbox.ClaimParams) (string, pgx.NamedArgs, error) {
	if p.Limit <= 0 {
		return "", nil, nil
	}
	if p.Owner == "" {
		return "", nil, &outbox.FieldError{Field: "ClaimParams.Owner", Problem: "must not be empty"}
	}
	now := outbox.Timestamp(p.Now)
	args := pgx.NamedArgs{
		"now":           now,
		"now_us":        now.UnixMicro(),
		"owner":         p.Owner,
		"lease_until":   ts(p.LeaseUntil),
		"limit":         p.Limit,
		"default_max":   p.DefaultMaxAttempts,
		"skip_given_up": p.SkipGivenUp,
	}
	if p.DefaultMaxAttempts <= 0 {
		args["default_max"] = outbox.DefaultMaxAttempts
	}
	byUser, byTypes := 0, 0
	if p.UserID != "" {
		args["user_id"] = p.UserID
		byUser = 1
	}
	switch len(p.Types) {
	case 0:
	case 1:
		args["type"] = p.Types[0]
		byTypes = 1
	default:
		args["types"] = p.Types
		byTypes = 2
	}
	skipping := 0
	if len(p.SkipTypes) > 0 {
		args["skip_types"] = p.SkipTypes
		skipping = 1
	}
	return s.claims.get(s.q.claim[byUser][byTypes][skipping], claimKey{byUser, byTypes, skipping, p.Limit}), args, nil
}

// claimStatements holds claim statements with their limit written into the text
// rather than passed as @limit. PostgreSQL runs a prepared statement with a generic
// plan, made without the arguments, when that plan looks no dearer than one made for
// each call; but a generic plan cannot see a parameter's LIMIT and takes it for a tenth
// of the rows. With @limit the claim was therefore planned afresh on most calls (about
// 1 ms of a 1.7 ms claim of one event, bench/), and a generic plan, when used, was
// costed by the backlog and compiled with JIT past jit_above_cost (0.9 s against 23 ms
// a claim of 1,000 at 1 M pending, bench/cmd/flat under force_generic_plan). With the
// limit in the text the generic plan is costed by the rows it takes. A processor claims
// with one or two limits (its batch size, and 1 to probe an open circuit); past
// maxLiteralLimits distinct ones the statement keeps its parameter, so that a caller
// passing ever-new limits cannot fill every connection's statement cache.
type claimStatements struct {
	mu sync.Mutex
	m  map[claimKey]string
}

type claimKey struct{ byUser, byTypes, skipping, limit int }

const maxLiteralLimits = 16

func (c *claimStatements) get(query string, k claimKey) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q, ok := c.m[k]; ok {
		return q
	}
	if len(c.m) >= maxLiteralLimits {
		return query
	}
	if c.m == nil {
		c.m = map[claimKey]string{}
	}
	q := strings.ReplaceAll(query, "@limit", strconv.Itoa(k.limit))
	c.m[k] = q
	return q
}

func (s *Store) claim(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, query string, args pgx.NamedArgs) ([]outbox.Event, error) {
	rows, err := q.Query(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// ExtendLease implements outbox.Store.
func (s *Store) ExtendLease(ctx context.Context, owner string, ids []string, until time.Time) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q.extendLease, pgx.NamedArgs{"until": ts(until), "ids": parseIDs(ids), "owner": owner})
	if err != nil {
		s.abandoned(ctx, err)
		return nil, fmt.Errorf("outbox/postgres: extend lease: %w", err)
	}
	held, err := pgx.CollectRows(rows, pgx.RowTo[pgtype.UUID])
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: extend lease: %w", err)
	}
	kept := make(map[[16]byte]bool, len(held))
	for _, id := range held {
		kept[id.Bytes] = true
	}
	var lost []string
	for _, id := range ids {
		if u, err := uuid.Parse(id); err != nil || !kept[u] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// Settle implements outbox.Store: all outcomes in one statement.
func (s *Store) Settle(ctx context.Context, owner string, now time.Time, outcomes []outbox.Outcome) error {
	var delivered, failed, released []pgtype.UUID
	var errs, releasedErrs []string
	var nexts []pgtype.Timestamptz
	for _, o := range outcomes {
		u, err := uuid.Parse(o.ID)
		if err != nil {
			continue // no event has this ID, so none is held
		}
		id := pgtype.UUID{Bytes: u, Valid: true}
		switch o.Result {
		case outbox.Delivered:
			delivered = append(delivered, id)
		case outbox.Failed:
			failed = append(failed, id)
			errs = append(errs, o.Error)
			nexts = append(nexts, ts(o.NextAttemptAt))
		case outbox.Released:
			released = append(released, id)
			releasedErrs = append(releasedErrs, o.Error) // empty: keep last_error
		default:
			return fmt.Errorf("%w: outcome for %s has no result", outbox.ErrInvalid, o.ID)
		}
	}
	if len(delivered)+len(failed)+len(released) == 0 {
		return nil
	}
	now = outbox.Timestamp(now)
	args := pgx.NamedArgs{
		"now": now, "now_us": now.UnixMicro(), "owner": owner,
		"delivered": delivered, "failed": failed, "errors": errs, "next_attempts": nexts, "released": released,
		"released_errors": releasedErrs,
	}
	if !s.cfg.DisableNotify {
		args["channel"] = s.cfg.Channel
	}
	var nDone, nFailed, nReleasedUsers int64
	if err := s.pool.QueryRow(ctx, s.q.settleEvents, args).Scan(&nDone, &nFailed, &nReleasedUsers); err != nil {
		s.abandoned(ctx, err)
		return fmt.Errorf("outbox/postgres: settle: %w", err)
	}
	if nReleasedUsers > 0 {
		s.wake.announce(map[string]struct{}{"": {}}) // released events are due again
	}
	return nil
}

// Get implements outbox.Store.
func (s *Store) Get(ctx context.Context, id string) (outbox.Event, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	rows, err := s.pool.Query(ctx, s.q.getEvent, pgx.NamedArgs{"id": pgtype.UUID{Bytes: u, Valid: true}})
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/postgres: get %s: %w", id, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/postgres: get %s: %w", id, err)
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
	args := filterArgs(f)
	args["limit"] = f.Limit
	if f.Limit == 0 {
		args["limit"] = 100
	}
	query := s.q.listEvents
	if !f.DueBefore.IsZero() || !f.StuckAt.IsZero() || f.Blocked || f.GivenUp || (f.Status != "" && f.Status != outbox.StatusCompleted) {
		query = s.q.listActive
	}
	// Planned for these arguments: unset filters fold away (see filterWhere).
	rows, err := s.pool.Query(ctx, query, pgx.QueryExecModeExec, args)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: list: %w", err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: list: %w", err)
	}
	return events, nil
}

// Update implements outbox.Store.
func (s *Store) Update(ctx context.Context, now time.Time, e *outbox.Event) error {
	if err := e.ValidateUpdate(); err != nil {
		return err
	}
	u, err := uuid.Parse(e.ID)
	if err != nil {
		return fmt.Errorf("%w: %s", outbox.ErrNotFound, e.ID)
	}
	for k, v := range e.Metadata {
		if err := checkText(&outbox.Event{Metadata: map[string]string{k: v}}); err != nil {
			return err
		}
	}
	var metadata *string
	if len(e.Metadata) > 0 {
		b, err := json.Marshal(e.Metadata)
		if err != nil {
			return fmt.Errorf("outbox/postgres: encode metadata: %w", err)
		}
		m := string(b)
		metadata = &m
	}
	now = outbox.Timestamp(now)
	args := pgx.NamedArgs{
		"id": pgtype.UUID{Bytes: u, Valid: true}, "now": now,
		"status": string(e.Status), "attempts": e.Attempts, "max_attempts": e.MaxAttempts,
		"priority": e.Priority, "metadata": metadata, "next_attempt_at": ts(e.NextAttemptAt),
		"completed_at": ts(e.CompletedAt), "last_error": nullString(e.LastError),
	}
	if !s.cfg.DisableNotify {
		args["channel"] = s.cfg.Channel
	}
	var n int64
	if err := s.pool.QueryRow(ctx, s.q.updateEvent, args).Scan(&n); err != nil {
		return fmt.Errorf("outbox/postgres: update %s: %w", e.ID, err)
	}
	if n == 0 {
		if _, err := s.Get(ctx, e.ID); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", outbox.ErrLeased, e.ID)
	}
	e.UpdatedAt = now
	e.LeaseOwner, e.LeaseExpiresAt = "", time.Time{}
	if e.Status != outbox.StatusCompleted {
		s.wake.announce(map[string]struct{}{e.UserID: {}})
	}
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
	args := filterArgs(f)
	args["now"] = outbox.Timestamp(now)
	if !s.cfg.DisableNotify {
		args["channel"] = s.cfg.Channel
	}
	var n, users int64
	if err := s.pool.QueryRow(ctx, s.q.retryEvents, pgx.QueryExecModeExec, args).Scan(&n, &users); err != nil {
		return 0, fmt.Errorf("outbox/postgres: retry: %w", err)
	}
	if n > 0 {
		s.wake.announce(map[string]struct{}{f.UserID: {}})
	}
	return int(n), nil
}

// Delete implements outbox.Store.
func (s *Store) Delete(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteEvents, pgx.NamedArgs{"ids": parseIDs(ids)})
	if err != nil {
		return 0, fmt.Errorf("outbox/postgres: delete: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// DeleteCompleted implements outbox.Store. Each call is one short statement that
// removes at most limit rows, found through the completed index.
func (s *Store) DeleteCompleted(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: DeleteCompleted: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteCompleted, pgx.NamedArgs{"before": ts(before), "limit": limit})
	if err != nil {
		return 0, fmt.Errorf("outbox/postgres: delete completed: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
