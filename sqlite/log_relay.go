package sqlite

// The log layout's delivery path on SQLite (the default layout for a new outbox; the
// outbox command's relay runs it). A LogRelay reads the log by its cursor and delivers; an
// event whose delivery fails leaves the log for the Store's events table, where
// today's Processor retries it. The delivery itself (keys, concurrency, outcomes,
// holds) is internal/logdelivery's, shared with postgres.LogRelay. See
// docs/log-layout.md, "SQLite: the delivery path".

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/logdelivery"
)

// The LogRelay's defaults.
const (
	// DefaultLogRelayCursor names the cursor of a LogRelay that names none.
	DefaultLogRelayCursor = "relay"
	// DefaultLogRelayBatchSize is how many events a LogRelay reads at a time.
	DefaultLogRelayBatchSize = 500
	// DefaultLogRelayPollInterval is how long an idle LogRelay waits, at most, before
	// it reads again, whatever its head polls and wake-ups say, and how long one whose
	// cursor another relay holds waits before it tries again.
	DefaultLogRelayPollInterval = 100 * time.Millisecond
	// DefaultLogRelayHeadPollInterval is how often an idle LogRelay reads the log's
	// largest rowid to learn of commits made without a wake-up (by another process, or
	// outside Log.Transact without Log.Committed). About half of it is added, on
	// average, to such an event's latency.
	DefaultLogRelayHeadPollInterval = 2 * time.Millisecond
	// DefaultLogRelayHeadPollMaxInterval bounds how far a LogRelay that has found
	// nothing for a while slows its head polls (LogRelayConfig.HeadPollMaxInterval).
	DefaultLogRelayHeadPollMaxInterval = 32 * time.Millisecond
	// DefaultLogRelayRetainInterval is how often a running LogRelay trims the log
	// behind every cursor (Log.Trim). A trim with nothing to delete is two lookups on
	// the primary key.
	DefaultLogRelayRetainInterval = 10 * time.Second
	// logRelayTrimLimit is how many events one transaction of a trim deletes at most,
	// so that appenders wait for the write lock no longer than for a batch's
	// acknowledgement, and Run's steps no longer than for one such transaction (Run
	// deletes one chunk between two steps). 1,000 took 0.9-2.5 ms where 10,000 took
	// 12-20 ms on a 2-vCPU machine.
	logRelayTrimLimit = 1_000
)

// LogRelayConfig tunes a LogRelay. Zero fields take their defaults.
type LogRelayConfig struct {
	// Cursor names the log cursor the relay reads and moves. Relays given the same
	// name share it under a lease, and one at a time delivers. Defaults to
	// DefaultLogRelayCursor.
	Cursor string
	// Owner names this relay in the cursor's lease. Defaults to a random UUID; two
	// relays must not share one.
	Owner string
	// Types scopes the relay to events of these types, as outbox.Config.Types scopes
	// a Processor: it passes the others by, undelivered, for a relay of another cursor
	// whose scope they are in (give each scope a Cursor of its own; every cursor holds
	// Trim back). A key's events of types in different scopes are delivered by
	// different relays, in no order between them. Defaults to all types.
	Types []string
	// BatchSize is how many events one step reads from the log. Defaults to
	// DefaultLogRelayBatchSize.
	BatchSize int
	// MaxConcurrent is how many ordering keys of a batch are delivered at once (events
	// without a key are each a key of their own). Within a key, one event at a time.
	// Defaults to outbox.DefaultMaxConcurrent. A BatchHandler is called instead with
	// one event of each key at a time.
	MaxConcurrent int
	// PollInterval is how long an idle relay waits, at most, before it reads the log
	// again, and how long one whose cursor another relay holds waits before it tries
	// again. Defaults to DefaultLogRelayPollInterval.
	PollInterval time.Duration
	// HeadPollInterval is how often an idle relay reads the log's largest rowid (one
	// indexed read, no write): it steps at once when that is past its position.
	// Appenders of this process can wake it without (Log.Transact, Log.Committed).
	// Defaults to DefaultLogRelayHeadPollInterval; negative turns head polls off, and
	// then events committed without a wake-up wait up to a PollInterval.
	HeadPollInterval time.Duration
	// HeadPollMaxInterval is how far a relay slows its head polls once its steps have
	// found nothing for a second: the interval doubles every further second without
	// events, from HeadPollInterval up to this, and goes back to HeadPollInterval as
	// soon as a step delivers. The first event after a quiet spell then waits up to
	// this long unless an appender of this process wakes the relay. Defaults to
	// DefaultLogRelayHeadPollMaxInterval; at most HeadPollInterval turns the slowing off.
	HeadPollMaxInterval time.Duration
	// RetainInterval is how often Run trims the log: it calls Log.Trim, a chunk
	// between two steps, until the events every cursor has passed are deleted, so that
	// the application need not. Defaults to DefaultLogRelayRetainInterval; negative leaves trimming to
	// the application. Step and Drain never trim.
	RetainInterval time.Duration
	// LeaseDuration is how long the cursor's lease lasts once taken or renewed: a relay
	// whose process died or froze holds the cursor that long at most. The relay renews
	// it with each commit and, while it delivers, every third of it. Defaults to
	// outbox.DefaultLeaseDuration.
	LeaseDuration time.Duration
	// HandlerTimeout bounds one delivery (one HandleBatch call for a BatchHandler);
	// one that overruns is a failed attempt. Defaults to outbox.DefaultHandlerTimeout;
	// negative means no timeout.
	HandlerTimeout time.Duration
	// Retry schedules the second attempt of an event whose first one failed here, and
	// gives it up when its attempt budget is one. Give it the Retry of the Processor
	// that takes over the events table.
	Retry outbox.RetryPolicy
	// Breaker tells destination faults from event failures (IsUnavailable) and paces
	// the relay while the destination is at fault: it waits Cooldown after the first
	// hold, twice as long after each hold in a row, up to MaxCooldown. Threshold is
	// only read for its sign: negative disables holds. Defaults as
	// outbox.BreakerConfig's.
	Breaker outbox.BreakerConfig
	// SkipGivenUp lets a key's events be delivered from the log past a given-up event
	// of the key in the events table. By default they join it there and wait,
	// reported as blocked.
	SkipGivenUp bool
	// Clock supplies the time, also of the lease. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives the relay's log lines. Defaults to slog.Default().
	Logger *slog.Logger
	// Observers are told what the relay does, as outbox.Config.Observers are told of
	// a Processor: ObserveClaim for each read of the log that found events (the
	// events read, and the time from taking the cursor to the batch), ObserveDelivery
	// for each attempt (a held or interrupted one as Released), and, for an
	// outbox.BreakerObserver, ObserveUnavailable for each attempt the destination
	// refused and ObserveHold("", reason, …) when the relay starts and stops holding
	// the log. Give the relay and the Processor over the events table the same
	// observers, and the counts are the outbox's. A batch held after some of its
	// events were delivered is delivered, and observed, again.
	Observers []outbox.Observer
}

func (c LogRelayConfig) withDefaults() LogRelayConfig {
	c.Cursor = cmp.Or(c.Cursor, DefaultLogRelayCursor)
	if c.Owner == "" {
		c.Owner = uuid.NewString()
	}
	c.BatchSize = cmp.Or(c.BatchSize, DefaultLogRelayBatchSize)
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, outbox.DefaultMaxConcurrent)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultLogRelayPollInterval)
	c.HeadPollInterval = cmp.Or(c.HeadPollInterval, DefaultLogRelayHeadPollInterval)
	c.HeadPollMaxInterval = cmp.Or(c.HeadPollMaxInterval, DefaultLogRelayHeadPollMaxInterval)
	c.RetainInterval = cmp.Or(c.RetainInterval, DefaultLogRelayRetainInterval)
	c.LeaseDuration = cmp.Or(c.LeaseDuration, outbox.DefaultLeaseDuration)
	c.HandlerTimeout = cmp.Or(c.HandlerTimeout, outbox.DefaultHandlerTimeout)
	c.Retry.MaxAttempts = cmp.Or(c.Retry.MaxAttempts, outbox.DefaultMaxAttempts)
	c.Breaker.Cooldown = cmp.Or(c.Breaker.Cooldown, outbox.DefaultBreakerCooldown)
	c.Breaker.MaxCooldown = cmp.Or(c.Breaker.MaxCooldown, max(outbox.DefaultBreakerMaxCooldown, c.Breaker.Cooldown))
	if c.Breaker.IsUnavailable == nil {
		c.Breaker.IsUnavailable = outbox.IsUnavailable
	}
	if c.Clock == nil {
		c.Clock = outbox.SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first field of c that cannot work, naming it; zero fields are
// fine. NewLogRelay calls it.
func (c LogRelayConfig) Validate() error {
	for _, f := range []struct {
		name  string
		value int
	}{{"BatchSize", c.BatchSize}, {"MaxConcurrent", c.MaxConcurrent}} {
		if f.value < 0 {
			return logRelayConfigError(f.name, fmt.Sprintf("must be positive, got %d", f.value))
		}
	}
	for _, f := range []struct {
		name  string
		value time.Duration
	}{{"PollInterval", c.PollInterval}, {"LeaseDuration", c.LeaseDuration}} {
		if f.value < 0 {
			return logRelayConfigError(f.name, fmt.Sprintf("must be positive, got %s", f.value))
		}
	}
	if c.LeaseDuration > 0 && c.LeaseDuration < 3*time.Millisecond {
		// Leases are stored in microseconds, and renewed every third.
		return logRelayConfigError("LeaseDuration", fmt.Sprintf("must be at least 3ms, got %s", c.LeaseDuration))
	}
	for i, t := range c.Types {
		if err := outbox.ValidateType(fmt.Sprintf("sqlite.LogRelayConfig.Types[%d]", i), t); err != nil {
			return err
		}
	}
	if err := c.Retry.Validate(); err != nil {
		return nestLogRelay("Retry", err)
	}
	if err := c.Breaker.Validate(); err != nil {
		return nestLogRelay("Breaker", err)
	}
	return nil
}

func logRelayConfigError(field, problem string) error {
	return &outbox.FieldError{Field: "sqlite.LogRelayConfig." + field, Problem: problem}
}

// nestLogRelay names a part's FieldError as a field of LogRelayConfig.
func nestLogRelay(part string, err error) error {
	var fe *outbox.FieldError
	if errors.As(err, &fe) {
		return logRelayConfigError(part+"."+fe.Field, fe.Problem)
	}
	return err
}

// ErrLogLeaseLost is returned by a LogRelay's step when another relay took the
// cursor's lease while this one delivered (its lease ran out: its process was frozen,
// or a delivery outlasted the lease without a renewal): nothing was moved, and the
// batch is delivered again by the lease's holder.
var ErrLogLeaseLost = errors.New("outbox/sqlite: log relay: another relay took the cursor's lease")

// A LogRelay delivers the log's events through a Handler, batch by batch, in commit
// order (rowid order; see log.go), and moves the events whose delivery fails to a
// Store's events table in the same database, where a Processor on that Store retries
// them, gives them up, and operators retry or discard them as any event.
//
// A step:
//
//  1. Reads up to BatchSize events after the cursor's position (a read; nothing is
//     written when there are none).
//  2. Makes sure it holds the cursor's lease, unless its lease is fresh (more than two
//     thirds of LeaseDuration left): one UPDATE of the cursor's row, taking it when it
//     is free, expired, or already this relay's, that returns the stored position. A
//     relay that finds another's lease reports Busy. A relay that finds the position
//     moved (another relay delivered meanwhile) reads again from there.
//  3. Looks up which of the batch's ordering keys have an unfinished event in the
//     events table (not completed; given-up ones too unless SkipGivenUp). Those keys'
//     events are not delivered: they join the table as pending, behind it.
//  4. Delivers the others through internal/logdelivery: a key's events in log order,
//     one at a time, MaxConcurrent keys at once (a BatchHandler gets one event of each
//     key per call). While it delivers it renews the lease every third of
//     LeaseDuration, and stops delivering if the lease was taken.
//  5. In ONE write transaction: inserts the events whose delivery failed into the
//     events table (failed, attempts 1, last_error, the attempt in errors,
//     next_attempt_at from Retry; given up when Permanent or the budget is one), and
//     after each its key's later events of the batch (pending); then moves the cursor
//     past the batch and renews the lease, in one UPDATE that matches only when the
//     position is still the batch's start and the lease still this relay's. Otherwise
//     it rolls back (ErrLogCursorMoved, ErrLogLeaseLost) and the batch is delivered
//     again. That transaction is the relay's only write per batch: it is the Ack.
//     Its wait for SQLite's write lock is bounded by the lease: the relay tries for
//     the lock, with short random pauses rather than the busy handler's, until the
//     lease ends, and then gives up with ErrLogAckLockTimeout (the batch is delivered
//     again) rather than commit after it.
//
// A destination fault (a DestinationError that is not merely suspected, or what
// Breaker.IsUnavailable says is one) moves nothing and spends no attempt: the step
// writes nothing, the cursor stays, and the relay waits (Cooldown, doubling to
// MaxCooldown) and reads again, one event at first as a probe.
//
// Delivery is at least once: a relay that dies, or whose step is cancelled, after
// delivering and before its commit leaves the cursor where it was, and the batch is
// delivered again, by it or by the next holder of the lease once it has run out.
//
// The events table must be in the log's database, and its events of the keys the
// relay delivers must come from this relay's cursor alone.
type LogRelay struct {
	log     *Log
	store   *Store
	cfg     LogRelayConfig
	logger  *slog.Logger
	cursor  *LogCursor
	deliver *logdelivery.Deliverer

	mu         sync.Mutex // one step at a time
	leaseUntil time.Time  // the lease this relay last took or renewed; zero: none

	runs logdelivery.Runner // Run, and Stop's wait for it

	trimLimit int // logRelayTrimLimit; tests set it lower

	// For tests and benchmarks: ackBusy is called each time the Ack finds the write
	// lock taken, ackWaited with each wait for it; ackBusyHandler has the Ack wait in
	// the pool's busy handler instead, as before beginAck.
	ackBusy        func()
	ackWaited      func(time.Duration)
	ackBusyHandler bool
}

// Statements of the cursor's lease and of the moves. The lease is two columns of the
// cursor's row (logmigrations/002), compared with the relay's Clock in Unix µs.
const (
	// takeLogLease takes the cursor for :owner until :until when it is free, expired
	// or already :owner's, and returns the stored position.
	takeLogLease = `
UPDATE outbox_log_cursors SET lease_owner = :owner, lease_until = :until
WHERE name = :name AND (lease_owner IS NULL OR lease_owner = :owner OR lease_until <= :now)
RETURNING after_seq`

	// renewLogLease extends :owner's lease, and matches nothing once it is another's.
	renewLogLease = `
UPDATE outbox_log_cursors SET lease_until = :until WHERE name = :name AND lease_owner = :owner`

	// releaseLogLease gives the lease up, so that another relay need not wait it out.
	releaseLogLease = `
UPDATE outbox_log_cursors SET lease_owner = NULL, lease_until = NULL
WHERE name = :name AND lease_owner = :owner`

	// ackLogRelay moves the cursor past a batch and renews the lease, only from the
	// batch's start and only for the lease's holder.
	ackLogRelay = `
UPDATE outbox_log_cursors SET after_seq = :to, updated_at = :now, lease_until = :until
WHERE name = :name AND after_seq = :from AND lease_owner = :owner`

	// logCursorState is the cursor's row, to say why a move was refused.
	logCursorState = `SELECT after_seq, coalesce(lease_owner, '') FROM outbox_log_cursors WHERE name = :name`

	// unfinishedLogKeys returns which of the keys (:keys, a JSON array) have an event in
	// the events table that is not completed (a given-up one counting unless
	// :skip_given_up), from the table's key index.
	unfinishedLogKeys = `
SELECT DISTINCT ordering_key FROM outbox_events
WHERE ordering_key IN (SELECT value FROM json_each(:keys)) AND status <> 'completed'
  AND NOT (:skip_given_up AND status = 'failed' AND next_attempt_at IS NULL)`

	// moveLogEvent inserts an event that leaves the log into the events table, with
	// the relay's attempt when it made one. An ID the table already holds (a caller
	// reusing an ID, which the log does not refuse) is left out.
	moveLogEvent = `
INSERT INTO outbox_events (id, type, entity_id, user_id, status, attempts, max_attempts, priority,
    is_new_record, metadata, payload, ordering_key, created_at, updated_at, last_attempt_at,
    next_attempt_at, last_error, errors)
VALUES (:id, :type, :entity_id, :user_id, :status, :attempts, :max_attempts, :priority,
    :is_new_record, :metadata, :payload, :ordering_key, :created_at, :now, :last_attempt_at,
    :next_attempt_at, :last_error,
    CASE WHEN :attempts > 0 THEN json_array(json_object('attempt', 1, 'at', :last_attempt_at, 'error', :last_error)) END)
ON CONFLICT (id) DO NOTHING`
)

// NewLogRelay returns a relay that delivers log's events through handler and moves
// those whose delivery fails to store's events table, which must be in the log's
// database. It opens (or creates, at the start of the log) the cursor cfg names. The
// relay does nothing until Step, Drain or Run is called.
func NewLogRelay(ctx context.Context, log *Log, store *Store, handler outbox.Handler, cfg LogRelayConfig) (*LogRelay, error) {
	switch {
	case log == nil:
		return nil, logRelayConfigError("log", "must not be nil")
	case store == nil:
		return nil, logRelayConfigError("store", "must not be nil")
	case handler == nil:
		return nil, logRelayConfigError("handler", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var n int
	if err := log.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox_events'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: look for the events table: %w", err)
	}
	if n == 0 {
		return nil, logRelayConfigError("store", "its events table is not in the log's database: the relay writes both in one transaction")
	}
	cursor, err := log.Cursor(ctx, cfg.Cursor)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("component", "outbox.logrelay", "cursor", cfg.Cursor, "owner", cfg.Owner)
	return &LogRelay{
		log: log, store: store, cfg: cfg, cursor: cursor, logger: logger, trimLimit: logRelayTrimLimit,
		deliver: logdelivery.New(handler, logdelivery.Config{
			MaxConcurrent: cfg.MaxConcurrent, HandlerTimeout: cfg.HandlerTimeout, Retry: cfg.Retry,
			Breaker: cfg.Breaker, Clock: cfg.Clock, Logger: logger, Observers: cfg.Observers,
		}),
	}, nil
}

// Config returns the relay's configuration, defaults filled in.
func (r *LogRelay) Config() LogRelayConfig { return r.cfg }

// Waiting counts the committed events the relay's cursor has not passed and returns
// when the oldest of them was created (zero when none wait): what waits on the log, for
// a gauge beside the events table's counts (see LogCursor.Waiting for its cost).
// Events that a step is delivering still count until its commit.
func (r *LogRelay) Waiting(ctx context.Context) (events int64, oldest time.Time, err error) {
	return r.cursor.Waiting(ctx)
}

// LogRelayStep is what one Step did.
type LogRelayStep struct {
	// Read is how many events the step read from the log.
	Read int
	// Delivered is how many of them the handler took. When the step did not commit
	// (Held, or an error), they are delivered again; when it did, they are counted in
	// the minute of the relay's Clock (Log.Delivered).
	Delivered int
	// Failed is how many failed their attempt and moved to the events table.
	Failed int
	// Waiting is how many moved to the events table as pending: behind an earlier
	// event of their ordering key there, or held at a faulty target of the destination
	// (a DestinationError with a Target), which the Processor holds there.
	Waiting int
	// Duplicates is how many could not move because the events table already holds an
	// event of their ID (the log does not refuse a reused ID); they are left out.
	Duplicates int
	// Held is true when a destination fault held the batch: nothing moved, the cursor
	// stayed, and Fault is the error; the relay reads the batch again after RetryIn.
	Held    bool
	Fault   error
	RetryIn time.Duration
	// Busy is true when another relay holds the cursor's lease: the step did nothing.
	Busy bool
}

func (s *LogRelayStep) add(o LogRelayStep) {
	s.Read += o.Read
	s.Delivered += o.Delivered
	s.Failed += o.Failed
	s.Waiting += o.Waiting
	s.Duplicates += o.Duplicates
	s.Held, s.Fault, s.RetryIn, s.Busy = o.Held, o.Fault, o.RetryIn, o.Busy
}

// Step delivers one batch: it reads a batch, takes the cursor's lease when it needs
// to (or reports Busy), delivers, and commits the moves with the cursor's move (see
// LogRelay). An error leaves the cursor where it was, and the batch is delivered
// again; so does a cancelled ctx, which also cuts short deliveries in flight.
func (r *LogRelay) Step(ctx context.Context) (st LogRelayStep, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := r.deliver.Limit(r.cfg.BatchSize) // one event while the destination was at fault
	start := time.Now()
	batch, err := r.cursor.Read(ctx, limit)
	if err != nil {
		return st, err
	}
	if len(batch.Events) == 0 {
		return st, nil
	}
	if ok, err := r.lease(ctx); err != nil || !ok {
		st.Busy = err == nil
		return st, err
	}
	if stored := r.cursor.Position(); stored != batch.from {
		// Another relay delivered since this one read: read from where it left.
		if batch, err = r.cursor.Read(ctx, limit); err != nil || len(batch.Events) == 0 {
			return st, err
		}
	}
	st.Read = len(batch.Events)
	r.deliver.Read(st.Read, time.Since(start))
	events := logdelivery.InScope(batch.Events, r.cfg.Types)
	groups, keys := logdelivery.Groups(events)
	blocked, err := r.unfinishedKeys(ctx, keys)
	if err != nil {
		return st, err
	}
	paused, err := r.pausedTypes(ctx)
	if err != nil {
		return st, err
	}
	deliver := logdelivery.Deliverable(events, groups, blocked, paused)

	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopRenewing := r.renewWhileDelivering(dctx, cancel)
	results := r.deliver.Deliver(dctx, events, deliver)
	stopRenewing()
	if cause := context.Cause(dctx); cause != nil {
		return st, fmt.Errorf("outbox/sqlite: log relay: delivery interrupted, the batch will be delivered again: %w", cause)
	}

	sum := logdelivery.Summarize(groups, results)
	st.Delivered = sum.Delivered
	if sum.Fault != nil {
		st.Held, st.Fault = true, sum.Fault
		st.RetryIn = r.deliver.Hold(st.Fault, st.Read)
		return st, nil
	}
	if err := r.commit(ctx, batch, events, sum.Moves, &st); err != nil {
		return st, err
	}
	if sum.Answered {
		r.deliver.Answered()
	}
	return st, nil
}

// lease makes sure the relay holds the cursor's lease, and reports whether it does.
// A lease with more than two thirds of LeaseDuration left is used as it is, without a
// write. Otherwise it is taken (or renewed) in one UPDATE, which also reloads the
// cursor's position; when another relay holds it, the position is reloaded too, so
// that this relay's head polls follow the holder's progress instead of waking it.
func (r *LogRelay) lease(ctx context.Context) (bool, error) {
	now := r.cfg.Clock.Now()
	if r.leaseUntil.Sub(now) > r.cfg.LeaseDuration*2/3 {
		return true, nil
	}
	until := now.Add(r.cfg.LeaseDuration)
	var after int64
	err := r.log.db.QueryRowContext(ctx, takeLogLease, sql.Named("owner", r.cfg.Owner),
		sql.Named("until", column.Micros(until)), sql.Named("name", r.cursor.name),
		sql.Named("now", column.Micros(now))).Scan(&after)
	if errors.Is(err, sql.ErrNoRows) {
		r.leaseUntil = time.Time{}
		if err := r.cursor.reload(ctx); err != nil {
			return false, err
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("outbox/sqlite: log relay: take the lease of cursor %q: %w", r.cursor.name, err)
	}
	r.leaseUntil = until
	r.cursor.setPosition(after)
	return true, nil
}

// renewWhileDelivering renews the lease every third of LeaseDuration until the
// returned function is called, and cancels the deliveries with ErrLogLeaseLost when
// another relay has taken it. It writes only for deliveries that outlast a third of
// the lease.
func (r *LogRelay) renewWhileDelivering(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var renewed time.Time
	wg.Go(func() {
		t := time.NewTicker(r.cfg.LeaseDuration / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			until := r.cfg.Clock.Now().Add(r.cfg.LeaseDuration)
			res, err := r.log.db.ExecContext(ctx, renewLogLease, sql.Named("until", column.Micros(until)),
				sql.Named("name", r.cursor.name), sql.Named("owner", r.cfg.Owner))
			var n int64
			if err == nil {
				n, err = res.RowsAffected()
			}
			switch {
			case err != nil && ctx.Err() == nil:
				// A failed write is not a lost lease: the commit's check decides.
				r.logger.Warn("could not renew the cursor's lease; deliveries go on", "err", err)
			case err == nil && n == 0:
				r.logger.Error("the cursor's lease was taken by another relay: deliveries cut short")
				cancel(ErrLogLeaseLost)
				return
			case err == nil:
				renewed = until
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if renewed.After(r.leaseUntil) {
			r.leaseUntil = renewed
		}
	}
}

// unfinishedKeys reports which of keys have an unfinished event in the events table.
func (r *LogRelay) unfinishedKeys(ctx context.Context, keys []string) (map[string]bool, error) {
	blocked := map[string]bool{}
	if len(keys) == 0 {
		return blocked, nil
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: look up ordering keys: %w", err)
	}
	rows, err := r.log.db.QueryContext(ctx, unfinishedLogKeys, sql.Named("keys", string(b)),
		sql.Named("skip_given_up", r.cfg.SkipGivenUp))
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: look up ordering keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: log relay: look up ordering keys: %w", err)
		}
		blocked[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: look up ordering keys: %w", err)
	}
	return blocked, nil
}

// pausedTypes reads the store's paused types (Store.PauseType) for a step: their
// events move to the events table, where they wait until the type is resumed.
func (r *LogRelay) pausedTypes(ctx context.Context) (map[string]bool, error) {
	list, err := queryPaused(ctx, r.log.db)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: read paused types: %w", err)
	}
	paused := make(map[string]bool, len(list))
	for _, p := range list {
		paused[p.Type] = true
	}
	return paused, nil
}

// commit writes the moves, moves the cursor past the batch, renews the lease and
// counts the step's deliveries (st.Delivered, in the minute of the relay's clock; see
// Log.Delivered), in one write transaction. A cursor moved meanwhile (a LogCursor of the name used
// outside a relay) or a lease taken by another relay rolls it all back.
func (r *LogRelay) commit(ctx context.Context, batch *LogBatch, events []outbox.Event, moves []logdelivery.Move, st *LogRelayStep) (err error) {
	tx, err := r.beginAck(ctx)
	if err != nil {
		return err
	}
	defer tx.rollback()
	// After the lock: the lease is renewed from when the Ack is written.
	now := r.cfg.Clock.Now()
	until := now.Add(r.cfg.LeaseDuration)
	users := map[string]struct{}{}
	var failed, waiting int
	if len(moves) > 0 {
		insert, err := tx.PrepareContext(ctx, moveLogEvent)
		if err != nil {
			return fmt.Errorf("outbox/sqlite: log relay: move events to the events table: %w", err)
		}
		defer insert.Close()
		for _, m := range moves {
			e := &events[m.Index]
			moved, err := r.move(ctx, insert, e, m.Failed, now)
			if err != nil {
				return fmt.Errorf("outbox/sqlite: log relay: move event %s to the events table: %w", e.ID, err)
			}
			switch {
			case !moved:
				st.Duplicates++
				r.logger.Error("event not moved to the events table: an event of its ID is already there (the log does not refuse a reused ID)",
					"event_id", e.ID, "type", e.Type)
			case m.Failed != nil && m.Failed.Kind == logdelivery.Failed:
				failed++
				users[e.UserID] = struct{}{}
			default:
				waiting++
				users[e.UserID] = struct{}{}
			}
		}
		// Now, not at return: the commit gives the connection back to the pool, which
		// may close it, and modernc.org/sqlite crashes closing a statement after that.
		insert.Close()
	}
	res, err := tx.ExecContext(ctx, ackLogRelay, sql.Named("to", batch.to), sql.Named("now", column.Micros(now)),
		sql.Named("until", column.Micros(until)), sql.Named("name", r.cursor.name),
		sql.Named("from", batch.from), sql.Named("owner", r.cfg.Owner))
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return fmt.Errorf("outbox/sqlite: ack log cursor %q: %w", r.cursor.name, err)
	}
	if n == 0 {
		return r.refused(ctx, tx)
	}
	if st.Delivered > 0 {
		if _, err := tx.ExecContext(ctx, countLogDelivered, sql.Named("minute", column.Micros(logdelivery.Minute(now))),
			sql.Named("cursor", r.cursor.name), sql.Named("delivered", st.Delivered)); err != nil {
			return fmt.Errorf("outbox/sqlite: log relay: count deliveries: %w", err)
		}
	}
	if err := tx.commit(); err != nil {
		return fmt.Errorf("outbox/sqlite: log relay: commit (the batch is delivered again): %w", err)
	}
	r.leaseUntil = until
	r.cursor.setPosition(batch.to)
	st.Failed, st.Waiting = failed, waiting
	if len(users) > 0 {
		r.store.notify(users) // the Processor's retries and waiting events
	}
	return nil
}

// refused says why the cursor's move matched nothing, and reloads what this relay
// knows of the cursor: its position, and that it holds no lease when another does.
func (r *LogRelay) refused(ctx context.Context, tx *ackTx) error {
	var (
		after int64
		owner string
	)
	if err := tx.QueryRowContext(ctx, logCursorState, sql.Named("name", r.cursor.name)).Scan(&after, &owner); err != nil {
		return fmt.Errorf("outbox/sqlite: ack log cursor %q: %w", r.cursor.name, err)
	}
	r.cursor.setPosition(after)
	if owner != r.cfg.Owner {
		r.leaseUntil = time.Time{}
		return fmt.Errorf("%w (held by %q); nothing moved, the batch is delivered again", ErrLogLeaseLost, owner)
	}
	return ErrLogCursorMoved
}

// move inserts one event into the events table, and reports whether it was inserted
// (not when the table already holds its ID).
func (r *LogRelay) move(ctx context.Context, insert *sql.Stmt, e *outbox.Event, failed *logdelivery.Result, now time.Time) (bool, error) {
	var metadata any
	if len(e.Metadata) > 0 {
		metadata = encodeLogMetadata(e.Metadata)
	}
	status, attempts := outbox.StatusPending, 0
	var lastAttempt, next, lastError any
	// Pending, due since it was written, as an event enqueued to the table is.
	next = column.Micros(e.CreatedAt)
	switch {
	case failed == nil:
	case failed.Kind == logdelivery.TargetHeld:
		// Held at its target: pending as it was, the attempt not counted (no history),
		// with the reason, where the Processor holds the target.
		lastError = logdelivery.HeldText(failed.Err)
	default:
		status, attempts = outbox.StatusFailed, 1
		lastAttempt = column.Micros(failed.At)
		next = column.NullMicros(failed.Next) // a zero Next gives it up
		lastError = logdelivery.ErrorText(failed.Err)
	}
	res, err := insert.ExecContext(ctx,
		sql.Named("id", e.ID), sql.Named("type", e.Type), sql.Named("entity_id", e.EntityID),
		sql.Named("user_id", e.UserID), sql.Named("status", string(status)), sql.Named("attempts", attempts),
		sql.Named("max_attempts", int64(e.MaxAttempts)), sql.Named("priority", int64(e.Priority)),
		sql.Named("is_new_record", e.IsNewRecord), sql.Named("metadata", metadata),
		sql.Named("payload", column.NullString(string(e.Payload))), sql.Named("ordering_key", column.NullString(e.OrderingKey)),
		sql.Named("created_at", column.Micros(e.CreatedAt)), sql.Named("now", column.Micros(now)),
		sql.Named("last_attempt_at", lastAttempt), sql.Named("next_attempt_at", next),
		sql.Named("last_error", lastError))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Release gives up the cursor's lease, when this relay holds it, so that another
// relay can take the cursor at once rather than when the lease runs out. Run calls it
// when it returns.
func (r *LogRelay) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leaseUntil = time.Time{}
	if _, err := r.log.db.ExecContext(ctx, releaseLogLease, sql.Named("name", r.cursor.name), sql.Named("owner", r.cfg.Owner)); err != nil {
		return fmt.Errorf("outbox/sqlite: log relay: release the lease of cursor %q: %w", r.cursor.name, err)
	}
	return nil
}

// Drain runs Step until a step reads nothing, the destination holds a batch, or
// another relay holds the cursor, and returns the steps' sum (Held, Fault, RetryIn
// and Busy are the last step's).
func (r *LogRelay) Drain(ctx context.Context) (LogRelayStep, error) {
	var total LogRelayStep
	for {
		st, err := r.Step(ctx)
		total.add(st)
		if err != nil || st.Read == 0 || st.Held || st.Busy {
			return total, err
		}
	}
}

// Run delivers until ctx ends, releases the cursor's lease, and returns ctx's error.
// It steps at once after a batch. When the log is idle it steps again as soon as an
// appender of this process says it committed (Log.Transact, Log.Committed) or a head
// poll finds the log's largest rowid past the cursor, and after a PollInterval at the
// latest. It waits a PollInterval when another relay holds the cursor, RetryIn after
// a held batch, and backs off (up to a PollInterval) while the database fails.
// Every RetainInterval it trims the log behind every cursor, a chunk of
// logRelayTrimLimit events between two steps until done. Stop
// makes it return nil after the step in flight. A second Run of the relay while one
// goes fails with an error.
func (r *LogRelay) Run(ctx context.Context) error {
	ctx, stopping, finish, err := r.runs.Start(ctx)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: log relay: %w", err)
	}
	defer finish()
	r.logger.Info("log relay started", "batch_size", r.cfg.BatchSize, "max_concurrent", r.cfg.MaxConcurrent,
		"poll_interval", r.cfg.PollInterval, "head_poll_interval", r.cfg.HeadPollInterval)
	wake, unsubscribe := r.log.wake.Subscribe("")
	defer unsubscribe()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.Release(rctx); err != nil {
			r.logger.Warn("could not release the cursor's lease; another relay waits for it to run out", "err", err)
		}
	}()
	var (
		errDelay time.Duration
		idleFrom time.Time // when the steps began to find nothing; zero: the last one read
		trimmed  time.Time // when Run last began a trim; zero: not yet, so at once
		trimming bool      // a trim is under way: a chunk between two steps until it is done
	)
	for {
		select {
		case <-stopping:
			return nil
		default:
		}
		if r.cfg.RetainInterval > 0 && (trimming || r.cfg.Clock.Now().Sub(trimmed) >= r.cfg.RetainInterval) {
			if !trimming {
				trimmed = r.cfg.Clock.Now()
			}
			trimming = r.trimChunk(ctx)
		}
		st, err := r.Step(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var wait time.Duration
		switch {
		case err != nil:
			errDelay = min(max(2*errDelay, 50*time.Millisecond), r.cfg.PollInterval)
			wait = errDelay
			r.logger.Error("log relay step failed; the batch will be read again", "err", err, "retry_in", wait)
		case st.Held:
			errDelay, wait = 0, st.RetryIn
		case st.Busy:
			errDelay, wait = 0, r.cfg.PollInterval
		case st.Read == 0:
			errDelay = 0
			if idleFrom.IsZero() {
				idleFrom = r.cfg.Clock.Now()
			}
			every := logdelivery.HeadPollEvery(r.cfg.Clock.Now().Sub(idleFrom), r.cfg.HeadPollInterval, r.cfg.HeadPollMaxInterval)
			if err := r.awaitNews(ctx, stopping, wake, every); err != nil {
				return err
			}
			continue
		default:
			errDelay, idleFrom = 0, time.Time{}
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-stopping:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Stop asks Run to return once its step in flight has finished, delivered and
// committed, and waits for it until ctx ends; then it cancels the step, whose batch
// the next relay delivers again, and returns ctx's error. Without a Run going it
// returns nil at once, and the next Run returns before its first step: a Stop on a
// signal that came before the goroutine meant to Run had begun stops it all the same.
// Run releases the cursor's lease as it returns.
func (r *LogRelay) Stop(ctx context.Context) error { return r.runs.Stop(ctx) }

// Trim deletes every event that every cursor has passed, in chunks of
// logRelayTrimLimit (a short write transaction each, so that appenders wait for the
// write lock no longer than for a batch's acknowledgement), and returns how many it
// deleted. Call it after Drain to do what Run does every RetainInterval.
func (r *LogRelay) Trim(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.log.Trim(ctx, r.trimLimit)
		total += n
		if err != nil || n < r.trimLimit {
			return total, err
		}
	}
}

// trimChunk is Run's trim: one chunk of Trim between two steps, so that a step waits
// for one chunk at most. It reports whether there is more to delete. A failure is
// logged and left for the next interval, since trimming only frees space.
func (r *LogRelay) trimChunk(ctx context.Context) (more bool) {
	n, err := r.log.Trim(ctx, r.trimLimit)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("trimming the log failed; the relay tries again after its retain interval",
				"err", err, "retry_in", r.cfg.RetainInterval)
		}
		return false
	}
	if n > 0 {
		r.logger.Debug("log trimmed", "events_deleted", n)
	}
	return n == r.trimLimit
}

// awaitNews waits, while the log is idle, until a wake-up, a head poll that finds the
// log's largest rowid past the cursor's position, or a PollInterval. A wake-up or a
// poll is a hint: the step that follows reads, and its read decides. It polls every
// every (HeadPollInterval, slowed while idle; see HeadPollMaxInterval).
func (r *LogRelay) awaitNews(ctx context.Context, stopping, wake <-chan struct{}, every time.Duration) error {
	deadline := time.NewTimer(r.cfg.PollInterval)
	defer deadline.Stop()
	var poll <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stopping:
			return nil // Run sees it
		case <-wake:
			return nil
		case <-deadline.C:
			return nil
		case <-poll:
			// Without ctx's cancellation: the read takes microseconds, and a cancellable
			// context costs database/sql and the driver a goroutine each per query, which
			// was most of an idle relay's CPU.
			var last int64
			if err := r.log.head.QueryRowContext(context.WithoutCancel(ctx)).Scan(&last); err != nil || last > r.cursor.Position() {
				return nil // the step reports a failing database
			}
		}
	}
}
