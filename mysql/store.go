// Package mysql is the outbox Store on MySQL 8.0+ and MariaDB 10.6+, through
// database/sql and github.com/go-sql-driver/mysql: the store to use when several
// relays deliver from one MySQL database.
//
// Events are written in the caller's *sql.Tx (EnqueueTx), so that data and events
// commit together. Relays claim due events with FOR UPDATE SKIP LOCKED under a lease
// and never hold two events of one ordering key at once: a unique index on a
// generated column refuses a second one. MySQL has no NOTIFY: the store wakes its own
// processors after its own commits, and notices other writers' commits with a probe
// of the table's highest seq (see Config.ProbeInterval); the processors' poll is the
// last fallback.
package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/hub"
	"github.com/fitiq/outbox/internal/sqltx"
)

// Store is an outbox.Store and outbox.Notifier on a MySQL or MariaDB database.
type Store struct {
	db     *sql.DB
	cfg    Config
	log    *slog.Logger
	q      queries
	txOpts *sql.TxOptions // the store's own write transactions

	// claimConflicts counts claims run again after losing a race for an ordering key.
	claimConflicts atomic.Int64

	subs hub.Hub       // the processors to wake
	own  sqltx.Tracker // transactions run by Transact, and the users they enqueued for

	stop      chan struct{}
	stopOnce  sync.Once
	probeDone chan struct{}
}

var (
	_ outbox.Store    = (*Store)(nil)
	_ outbox.Notifier = (*Store)(nil)
)

// New returns a Store on db for the outbox table cfg names, in db's current database,
// which must have been migrated (see Migrate): otherwise it fails with
// ErrNotMigrated. It checks that the server is one the store works on (MySQL 8.0.1+
// or MariaDB 10.6+: SKIP LOCKED), that sessions do not read uncommitted rows, and
// that the server accepts writes at cfg.Isolation. db stays the caller's; Close stops
// only the store's probe.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, configError("db", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := checkServer(ctx, db, cfg); err != nil {
		return nil, err
	}
	n := newNames(cfg)
	if err := checkSchema(ctx, db, n); err != nil {
		return nil, err
	}
	s := &Store{
		db:        db,
		cfg:       cfg,
		log:       cfg.Logger.With("component", "outbox.mysql", "table", cfg.Table),
		q:         newQueries(n),
		txOpts:    &sql.TxOptions{Isolation: cfg.Isolation},
		stop:      make(chan struct{}),
		probeDone: make(chan struct{}),
	}
	if cfg.ProbeInterval > 0 {
		go s.probe()
	} else {
		close(s.probeDone)
	}
	return s, nil
}

// checkServer reads the server's version and settings once, so that a store that
// cannot work fails at New with the reason instead of at its first claim.
func checkServer(ctx context.Context, db *sql.DB, cfg Config) error {
	var version string
	if err := db.QueryRowContext(ctx, `SELECT VERSION()`).Scan(&version); err != nil {
		return fmt.Errorf("outbox/mysql: read server version: %w", err)
	}
	if err := checkVersion(version); err != nil {
		return err
	}
	// MySQL 8 names it transaction_isolation; MariaDB before 11.1 only tx_isolation.
	var level string
	err := db.QueryRowContext(ctx, `SELECT @@transaction_isolation`).Scan(&level)
	if errorNumber(err) == erUnknownSystemVariable {
		err = db.QueryRowContext(ctx, `SELECT @@tx_isolation`).Scan(&level)
	}
	if err != nil {
		return fmt.Errorf("outbox/mysql: read transaction isolation: %w", err)
	}
	if level == "READ-UNCOMMITTED" {
		return fmt.Errorf("%w: outbox/mysql: the session's transaction isolation is READ UNCOMMITTED, so Get, List and a caller's transactions would see events that may still roll back; use REPEATABLE READ (the default) or READ COMMITTED", outbox.ErrInvalid)
	}
	var logBin sql.NullInt64
	var format sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT @@log_bin, @@binlog_format`).Scan(&logBin, &format); err != nil {
		return fmt.Errorf("outbox/mysql: read binary log settings: %w", err)
	}
	if logBin.Int64 == 1 && format.String == "STATEMENT" && cfg.Isolation == sql.LevelReadCommitted {
		return configError("Isolation", "is READ COMMITTED, but the server writes a statement-format binary log, which refuses writes at that level; set sql.LevelRepeatableRead (or binlog_format=ROW)")
	}
	return nil
}

// checkVersion accepts MySQL 8.0.1+ and MariaDB 10.6+, the first with SKIP LOCKED.
func checkVersion(version string) error {
	num, _, _ := strings.Cut(version, "-")
	var v [3]int
	for i, part := range strings.SplitN(num, ".", 3) {
		v[i], _ = strconv.Atoi(part)
	}
	at := func(major, minor, patch int) bool {
		return cmp.Or(cmp.Compare(v[0], major), cmp.Compare(v[1], minor), cmp.Compare(v[2], patch)) >= 0
	}
	if strings.Contains(strings.ToLower(version), "mariadb") {
		if !at(10, 6, 0) {
			return fmt.Errorf("outbox/mysql: MariaDB %s has no SKIP LOCKED; the store needs 10.6 or later", version)
		}
		return nil
	}
	if !at(8, 0, 1) {
		return fmt.Errorf("outbox/mysql: MySQL %s has no SKIP LOCKED; the store needs 8.0.1 or later", version)
	}
	return nil
}

// Config returns the store's configuration, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// DB returns the database the store works on.
func (s *Store) DB() *sql.DB { return s.db }

// Close stops the store's probe and waits for it. The *sql.DB is left open.
func (s *Store) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.probeDone
}

// Transact runs fn in a transaction (at the session's isolation level) and commits
// it when fn returns nil; it rolls back when fn returns an error or panics. Write your
// data and EnqueueTx its events inside fn, and both land or neither does. After the
// commit, processors of this store wake at once.
func (s *Store) Transact(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.own.Transact(ctx, s.db, "outbox/mysql", fn, s.notify)
}

// EnqueueTx writes events in the caller's transaction and never commits it: roll the
// transaction back and the events are gone with the data. Every event is validated
// first, and nothing is written when any is invalid; a batch is one INSERT. In a
// transaction of Transact, processors wake when it commits; otherwise the store's
// probe notices the events within Config.ProbeInterval. It fills ID, Seq, Status and
// the times of each event.
func (s *Store) EnqueueTx(ctx context.Context, tx *sql.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: EnqueueTx: tx must not be nil", outbox.ErrInvalid)
	}
	users, err := s.insert(ctx, tx, time.Now(), events)
	if err != nil {
		return err
	}
	s.own.Add(tx, users)
	return nil
}

// Enqueue implements outbox.Store: one event is one INSERT, committed on its own; a
// batch is one INSERT in a transaction. Processors of this store wake at once.
func (s *Store) Enqueue(ctx context.Context, now time.Time, events ...*outbox.Event) error {
	var users map[string]struct{}
	var err error
	if len(events) <= 1 {
		users, err = s.insert(ctx, s.db, now, events)
	} else {
		err = s.inTx(ctx, nil, func(tx *sql.Tx) error {
			users, err = s.insert(ctx, tx, now, events)
			return err
		})
	}
	if err != nil {
		return err
	}
	if len(users) > 0 {
		s.notify(users)
	}
	return nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// insert validates events and writes them in one statement with q.
func (s *Store) insert(ctx context.Context, q querier, now time.Time, events []*outbox.Event) (map[string]struct{}, error) {
	for i, e := range events {
		if e == nil {
			return nil, fmt.Errorf("%w: event %d is nil", outbox.ErrInvalid, i)
		}
		err := e.Prepare(now, s.cfg.MaxPayloadBytes)
		if err == nil {
			s.cfg.OnEnqueue.Run(ctx, e)
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
	}
	if len(events) == 0 {
		return nil, nil
	}
	var text strings.Builder
	text.WriteString(s.q.insertColumns)
	values := make([]any, 0, 13*len(events))
	ids := make([][]byte, len(events))
	users := make(map[string]struct{}, 1)
	for i, e := range events {
		if i > 0 {
			text.WriteString(", ")
		}
		text.WriteString(insertRow)
		var metadata any
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("outbox/mysql: encode metadata: %w", err)
			}
			metadata = string(b)
		}
		var payload any
		if len(e.Payload) > 0 {
			payload = []byte(e.Payload)
		}
		u := uuid.MustParse(e.ID)
		ids[i] = u[:]
		at := column.Micros(e.CreatedAt)
		values = append(values, ids[i], e.Type, e.EntityID, e.UserID, e.MaxAttempts, e.Priority, e.IsNewRecord,
			metadata, payload, column.NullString(e.OrderingKey), at, at, at)
		users[e.UserID] = struct{}{}
	}
	res, err := q.ExecContext(ctx, text.String(), values...)
	if err != nil {
		return nil, enqueueError(err)
	}
	if len(events) == 1 {
		if events[0].Seq, err = res.LastInsertId(); err != nil {
			return nil, fmt.Errorf("outbox/mysql: insert events: %w", err)
		}
	} else if err := s.readSeqs(ctx, q, events, ids); err != nil {
		return nil, err
	}
	for _, e := range events {
		s.log.Debug("event created", "event_id", e.ID, "type", e.Type, "entity_id", e.EntityID, "user_id", e.UserID)
	}
	return users, nil
}

// readSeqs fills the seqs of a batch from the table: the driver reports only the
// first, and the server promises consecutive values only under some settings
// (innodb_autoinc_lock_mode, auto_increment_increment).
func (s *Store) readSeqs(ctx context.Context, q querier, events []*outbox.Event, ids [][]byte) error {
	query, a := s.q.seqsOf.bind(args{"ids": ids})
	rows, err := q.QueryContext(ctx, query, a...)
	if err != nil {
		return fmt.Errorf("outbox/mysql: read seqs: %w", err)
	}
	defer rows.Close()
	seqs := make(map[uuid.UUID]int64, len(events))
	for rows.Next() {
		var id []byte
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return fmt.Errorf("outbox/mysql: read seqs: %w", err)
		}
		u, _ := uuid.FromBytes(id)
		seqs[u] = seq
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("outbox/mysql: read seqs: %w", err)
	}
	for _, e := range events {
		e.Seq = seqs[uuid.MustParse(e.ID)]
	}
	return nil
}

// Claim implements outbox.Store. In one transaction it locks due events of each kind
// (expired leases, pending heads, due retries) with SKIP LOCKED, so that concurrent
// claimers pass over each other's rows instead of queueing, and leases the best
// p.Limit of them. A claim that loses a race for an ordering key to another relay (the
// key_in_flight index refuses a second event of the key in flight), or that the server
// picks to break a deadlock, is run again.
func (s *Store) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	if p.Limit <= 0 {
		return nil, nil
	}
	if p.Owner == "" {
		return nil, &outbox.FieldError{Field: "ClaimParams.Owner", Problem: "must not be empty"}
	}
	const maxTries = 20
	for try := 1; ; try++ {
		var events []outbox.Event
		err := sqltx.Run(ctx, s.db, s.txOpts, func(tx *sql.Tx) error {
			var err error
			events, err = s.claim(ctx, tx, p)
			return err
		})
		if err == nil {
			return events, nil
		}
		if try < maxTries && isClaimConflict(err) && ctx.Err() == nil {
			s.claimConflicts.Add(1)
			s.log.Debug("claim raced another relay; claiming again", "err", err)
			pause(ctx, try)
			continue
		}
		return nil, fmt.Errorf("outbox/mysql: claim: %w", err)
	}
}

type candidate struct {
	seq      int64
	priority int
}

// claim runs the statements of one claim in tx.
func (s *Store) claim(ctx context.Context, tx *sql.Tx, p outbox.ClaimParams) ([]outbox.Event, error) {
	now := outbox.Timestamp(p.Now)
	a := args{
		"now":           column.Micros(now),
		"owner":         p.Owner,
		"lease_until":   column.Micros(p.LeaseUntil),
		"limit":         p.Limit,
		"default_max":   cmp.Or(max(p.DefaultMaxAttempts, 0), outbox.DefaultMaxAttempts),
		"skip_given_up": p.SkipGivenUp,
		"user_id":       p.UserID,
	}
	byUser, byTypes := 0, 0
	if p.UserID != "" {
		byUser = 1
	}
	if len(p.Types) > 0 {
		a["types"] = p.Types
		byTypes = 1
	}
	skipping := 0
	if len(p.SkipTypes) > 0 {
		a["skip_types"] = p.SkipTypes
		skipping = 1
	}
	c := s.q.claims[byUser][byTypes][skipping]
	expired, pending, retry := c.expired, c.pending, c.retry
	var cands []candidate
	var givenUp []int64
	query, qa := expired.bind(a)
	rows, err := tx.QueryContext(ctx, query, qa...)
	if err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	for rows.Next() {
		var c candidate
		var left bool
		if err := rows.Scan(&c.seq, &c.priority, &left); err != nil {
			rows.Close()
			return nil, err
		}
		if left {
			cands = append(cands, c)
		} else {
			givenUp = append(givenUp, c.seq)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	for _, st := range []stmt{pending, retry} {
		query, qa := st.bind(a)
		rows, err := tx.QueryContext(ctx, query, qa...)
		if err != nil {
			return nil, fmt.Errorf("due events: %w", err)
		}
		for rows.Next() {
			var c candidate
			if err := rows.Scan(&c.seq, &c.priority); err != nil {
				rows.Close()
				return nil, err
			}
			cands = append(cands, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("due events: %w", err)
		}
	}
	if len(givenUp) > 0 {
		query, qa := s.q.giveUp.bind(args{"now": a["now"], "seqs": givenUp})
		if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
			return nil, fmt.Errorf("give up expired leases: %w", err)
		}
	}
	if len(cands) == 0 {
		return nil, nil
	}
	slices.SortFunc(cands, func(x, y candidate) int {
		return cmp.Or(cmp.Compare(y.priority, x.priority), cmp.Compare(x.seq, y.seq))
	})
	cands = cands[:min(len(cands), p.Limit)]
	seqs := make([]int64, len(cands))
	for i, c := range cands {
		seqs[i] = c.seq
	}
	a["seqs"] = seqs
	query, qa = s.q.claimEvents.bind(a)
	if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
		return nil, err // a duplicate here is key_in_flight: see isClaimConflict
	}
	query, qa = s.q.eventsBySeq.bind(a)
	rows, err = tx.QueryContext(ctx, query, qa...)
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
	kept := map[uuid.UUID]bool{}
	err := s.inTx(ctx, s.txOpts, func(tx *sql.Tx) error {
		clear(kept)
		query, qa := s.q.heldByOwner.bind(args{"ids": idBytes(ids), "owner": owner})
		rows, err := tx.QueryContext(ctx, query, qa...)
		if err != nil {
			return err
		}
		var seqs []int64
		for rows.Next() {
			var seq int64
			var id []byte
			if err := rows.Scan(&seq, &id); err != nil {
				rows.Close()
				return err
			}
			seqs = append(seqs, seq)
			u, _ := uuid.FromBytes(id)
			kept[u] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(seqs) == 0 {
			return err
		}
		query, qa = s.q.extendLease.bind(args{"until": column.Micros(until), "seqs": seqs})
		_, err = tx.ExecContext(ctx, query, qa...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: extend lease: %w", err)
	}
	var lost []string
	for _, id := range ids {
		if u, err := uuid.Parse(id); err != nil || !kept[u] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// Settle implements outbox.Store: all outcomes in one transaction.
func (s *Store) Settle(ctx context.Context, owner string, now time.Time, outcomes []outbox.Outcome) error {
	var delivered, released [][]byte
	var failed []outbox.Outcome
	var reasons byID // released events with a reason: it becomes their last_error
	for _, o := range outcomes {
		u, err := uuid.Parse(o.ID)
		switch o.Result {
		case outbox.Delivered, outbox.Failed, outbox.Released:
		default:
			return fmt.Errorf("%w: outcome for %s has no result", outbox.ErrInvalid, o.ID)
		}
		if err != nil {
			continue // no event has this ID, so none is held
		}
		switch o.Result {
		case outbox.Delivered:
			delivered = append(delivered, u[:])
		case outbox.Released:
			released = append(released, u[:])
			if o.Error != "" {
				reasons = append(reasons, byID{{u[:], o.Error}}...)
			}
		case outbox.Failed:
			failed = append(failed, o)
		}
	}
	if len(delivered)+len(failed)+len(released) == 0 {
		return nil
	}
	at := column.Micros(outbox.Timestamp(now))
	err := s.inTx(ctx, s.txOpts, func(tx *sql.Tx) error {
		if len(delivered) > 0 {
			query, qa := s.q.completeEvents.bind(args{"now": at, "ids": delivered, "owner": owner})
			if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
				return fmt.Errorf("complete: %w", err)
			}
		}
		if len(failed) > 0 {
			ids := make([][]byte, len(failed))
			errs, nexts := make(byID, len(failed)), make(byID, len(failed))
			for i, o := range failed {
				u := uuid.MustParse(o.ID)
				ids[i] = u[:]
				errs[i].id, errs[i].value = ids[i], o.Error
				nexts[i].id, nexts[i].value = ids[i], column.NullMicros(outbox.Timestamp(o.NextAttemptAt))
			}
			query, qa := s.q.failEvents.bind(args{"now": at, "ids": ids, "owner": owner, "errors": errs, "next_attempts": nexts})
			if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
				return fmt.Errorf("record failures: %w", err)
			}
		}
		if len(released) > 0 {
			release, a := s.q.release, args{"now": at, "ids": released, "owner": owner}
			if len(reasons) > 0 {
				release, a["reasons"] = s.q.releaseWithReasons, reasons
			}
			query, qa := release.bind(a)
			if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
				return fmt.Errorf("release: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox/mysql: settle: %w", err)
	}
	if len(released) > 0 {
		s.notify(nil) // released events are due again, whoever they belong to
	}
	return nil
}

// Get implements outbox.Store.
func (s *Store) Get(ctx context.Context, id string) (outbox.Event, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	query, qa := s.q.getEvent.bind(args{"id": u[:]})
	rows, err := s.db.QueryContext(ctx, query, qa...)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/mysql: get %s: %w", id, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/mysql: get %s: %w", id, err)
	}
	if len(events) == 0 {
		return outbox.Event{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	return events[0], nil
}

// filterSQL renders the conditions of f, only those set, so that the server plans
// each query for the filters it has.
func filterSQL(table string, f outbox.Filter) (string, args) {
	conds := []string{"TRUE"}
	a := args{}
	if len(f.IDs) > 0 {
		conds = append(conds, "id IN (:ids)")
		a["ids"] = idBytes(f.IDs)
	}
	if f.Status != "" {
		conds = append(conds, "status = :status")
		a["status"] = string(f.Status)
	}
	if f.GivenUp {
		conds = append(conds, "status = 'failed' AND next_attempt_at IS NULL")
	}
	if !f.DueBefore.IsZero() {
		conds = append(conds, "status IN ('pending', 'failed') AND next_attempt_at < :due_before")
		a["due_before"] = column.Micros(f.DueBefore)
	}
	if !f.StuckAt.IsZero() {
		// state_at is lease_expires_at in flight: the processing range of the due index.
		conds = append(conds, "status = 'processing' AND state_at <= :stuck_at")
		a["stuck_at"] = column.Micros(f.StuckAt)
	}
	if f.Blocked {
		// Waiting behind a given-up earlier event of the key, found through open_key
		// (a given-up event is unfinished, so it is there).
		conds = append(conds, "ordering_key IS NOT NULL AND status IN ('pending', 'failed') AND next_attempt_at IS NOT NULL"+
			" AND EXISTS (SELECT 1 FROM "+table+" g WHERE g.open_key = "+table+".ordering_key AND g.seq < "+table+".seq"+
			" AND g.status = 'failed' AND g.next_attempt_at IS NULL)")
	}
	if f.Type != "" {
		conds = append(conds, "type = :type")
		a["type"] = f.Type
	}
	if f.UserID != "" {
		conds = append(conds, "user_id = :user_id")
		a["user_id"] = f.UserID
	}
	if f.AfterSeq > 0 {
		conds = append(conds, "seq > :after_seq")
		a["after_seq"] = f.AfterSeq
	}
	return strings.Join(conds, " AND "), a
}

// listQuery renders List's statement for f.
func (s *Store) listQuery(f outbox.Filter) (string, []any) {
	where, a := filterSQL(s.q.table, f)
	a["limit"] = cmp.Or(f.Limit, 100)
	return compile(`SELECT ` + eventColumns + ` FROM ` + s.q.table + ` WHERE ` + where + ` ORDER BY seq LIMIT :limit`).bind(a)
}

// List implements outbox.Store.
func (s *Store) List(ctx context.Context, f outbox.Filter) ([]outbox.Event, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	query, qa := s.listQuery(f)
	rows, err := s.db.QueryContext(ctx, query, qa...)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: list: %w", err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: list: %w", err)
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
	if err := checkText(&outbox.Event{Metadata: e.Metadata}); err != nil {
		return err
	}
	var metadata any
	if len(e.Metadata) > 0 {
		b, err := json.Marshal(e.Metadata)
		if err != nil {
			return fmt.Errorf("outbox/mysql: encode metadata: %w", err)
		}
		metadata = string(b)
	}
	now = outbox.Timestamp(now)
	errLeased := errors.New("leased")
	err = s.inTx(ctx, s.txOpts, func(tx *sql.Tx) error {
		query, qa := s.q.lockForUpdate.bind(args{"id": u[:]})
		var status string
		var lease sql.NullInt64
		if err := tx.QueryRowContext(ctx, query, qa...).Scan(&status, &lease); err != nil {
			return err
		}
		if status == string(outbox.StatusProcessing) && lease.Int64 > column.Micros(now) {
			return errLeased
		}
		query, qa = s.q.updateEvent.bind(args{
			"id": u[:], "now": column.Micros(now),
			"status": string(e.Status), "attempts": e.Attempts, "max_attempts": e.MaxAttempts,
			"priority": e.Priority, "metadata": metadata, "next_attempt_at": column.NullMicros(outbox.Timestamp(e.NextAttemptAt)),
			"completed_at": column.NullMicros(outbox.Timestamp(e.CompletedAt)), "last_error": column.NullString(e.LastError),
		})
		_, err := tx.ExecContext(ctx, query, qa...)
		return err
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %s", outbox.ErrNotFound, e.ID)
	case errors.Is(err, errLeased):
		return fmt.Errorf("%w: %s", outbox.ErrLeased, e.ID)
	case err != nil:
		return fmt.Errorf("outbox/mysql: update %s: %w", e.ID, err)
	}
	e.UpdatedAt = now
	e.LeaseOwner, e.LeaseExpiresAt = "", time.Time{}
	if e.Status != outbox.StatusCompleted {
		s.notify(map[string]struct{}{e.UserID: {}})
	}
	return nil
}

// idChunk bounds the IDs of one statement, well under the 65,535 placeholders a
// prepared statement may have.
const idChunk = 1000

// Retry implements outbox.Store.
func (s *Store) Retry(ctx context.Context, now time.Time, f outbox.Filter) (int, error) {
	if err := f.Validate(); err != nil {
		return 0, err
	}
	if f.Status == "" && !f.GivenUp && len(f.IDs) == 0 {
		f.Status = outbox.StatusFailed
	}
	where, a := filterSQL(s.q.table, f)
	at := column.Micros(outbox.Timestamp(now))
	a["now"] = at
	var n int
	err := s.inTx(ctx, s.txOpts, func(tx *sql.Tx) error {
		n = 0
		query, qa := s.q.retryable(where).bind(a)
		rows, err := tx.QueryContext(ctx, query, qa...)
		if err != nil {
			return err
		}
		var seqs []int64
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				rows.Close()
				return err
			}
			seqs = append(seqs, seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for chunk := range slices.Chunk(seqs, idChunk) {
			query, qa := s.q.retryEvents.bind(args{"now": at, "seqs": chunk})
			if _, err := tx.ExecContext(ctx, query, qa...); err != nil {
				return err
			}
		}
		n = len(seqs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("outbox/mysql: retry: %w", err)
	}
	if n > 0 && f.UserID != "" {
		s.notify(map[string]struct{}{f.UserID: {}})
	} else if n > 0 {
		s.notify(nil)
	}
	return n, nil
}

// Delete implements outbox.Store.
func (s *Store) Delete(ctx context.Context, ids ...string) (int, error) {
	total := 0
	for chunk := range slices.Chunk(idBytes(ids), idChunk) {
		query, qa := s.q.deleteEvents.bind(args{"ids": chunk})
		res, err := s.db.ExecContext(ctx, query, qa...)
		if err != nil {
			return total, fmt.Errorf("outbox/mysql: delete: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("outbox/mysql: delete: %w", err)
		}
		total += int(n)
	}
	return total, nil
}

// DeleteCompleted implements outbox.Store. Each call is one short statement that
// removes at most limit rows, found through the due index, in a transaction at
// Config.Isolation (READ COMMITTED takes no gap locks that would hold up settles).
func (s *Store) DeleteCompleted(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: DeleteCompleted: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	var n int64
	err := s.inTx(ctx, s.txOpts, func(tx *sql.Tx) error {
		query, qa := s.q.deleteCompleted.bind(args{"before": column.Micros(before), "limit": limit})
		res, err := tx.ExecContext(ctx, query, qa...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("outbox/mysql: delete completed: %w", err)
	}
	return int(n), nil
}
