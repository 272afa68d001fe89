package postgres

// The log layout's delivery path (the default layout for a new outbox; the outbox
// command's relay runs it). A LogRelay reads the log by its cursor and delivers; an event
// whose delivery fails leaves the log for the table layout's events table, where
// today's Processor retries it. See docs/log-layout.md.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/logdelivery"
)

// The LogRelay's defaults.
const (
	// DefaultLogRelayCursor names the cursor of a LogRelay that names none.
	DefaultLogRelayCursor = "relay"
	// DefaultLogRelayBatchSize is how many events a LogRelay reads at a time.
	DefaultLogRelayBatchSize = 500
	// DefaultLogRelayPollInterval is how long an idle LogRelay waits, at most, before
	// it reads again, whatever its head polls and wake-ups say.
	DefaultLogRelayPollInterval = 100 * time.Millisecond
	// DefaultLogRelayHeadPollInterval is how often an idle LogRelay asks the database
	// whether anything committed since it last looked. It bounds the latency of events
	// appended by other processes: about half of it is added on average.
	DefaultLogRelayHeadPollInterval = time.Millisecond
	// DefaultLogRelayHeadPollMaxInterval bounds how far a LogRelay that has found
	// nothing for a while slows its head polls (LogRelayConfig.HeadPollMaxInterval).
	DefaultLogRelayHeadPollMaxInterval = 32 * time.Millisecond
	// DefaultLogRelayConcurrency is how many shards of the log a LogRelay delivers at
	// once.
	DefaultLogRelayConcurrency = 1
	// DefaultLogRelayRetainInterval is how often a running LogRelay calls Log.Retain.
	// Retain is a few catalog reads when there is nothing to empty, and the ring's
	// partitions fill in about a minute at a thousand write transactions a second.
	DefaultLogRelayRetainInterval = 10 * time.Second
)

// LogRelayConfig tunes a LogRelay. Zero fields take their defaults.
type LogRelayConfig struct {
	// Cursor names the log cursor the relay reads and moves, one position per shard of
	// the log. Relays given the same name share the shards, and one relay at a time
	// delivers each shard. Defaults to DefaultLogRelayCursor.
	Cursor string
	// Types scopes the relay to events of these types, as outbox.Config.Types scopes
	// a Processor: it passes the others by, undelivered, for a relay of another cursor
	// whose scope they are in (give each scope a Cursor of its own; every cursor holds
	// retention back). A key's events of types in different scopes are delivered by
	// different relays, in no order between them. Defaults to all types.
	Types []string
	// Concurrency is how many shards the relay delivers at once, each in a step of its
	// own on a connection of its own (held while it delivers), so the pool needs this
	// many connections, one more for the head poll and one for Run's retention while
	// it runs (see RetainInterval). It is at most the log's
	// shards. Defaults to DefaultLogRelayConcurrency.
	Concurrency int
	// BatchSize is how many events one step reads from the log. Defaults to
	// DefaultLogRelayBatchSize.
	BatchSize int
	// MaxConcurrent is how many ordering keys of a batch are delivered at once (events
	// without a key are each a key of their own). Within a key, one event at a time.
	// Defaults to outbox.DefaultMaxConcurrent. A BatchHandler is called instead with
	// one event of each key at a time (see LogRelay).
	MaxConcurrent int
	// PollInterval is how long an idle relay waits, at most, before it reads the log
	// again, and how long one whose cursor another relay holds waits before it tries
	// again. Defaults to DefaultLogRelayPollInterval.
	PollInterval time.Duration
	// HeadPollInterval is how often an idle relay polls the log's head between reads:
	// one statement, outside any transaction, that writes nothing and tells whether a
	// transaction has finished since the last poll and, if one has, whether the log
	// holds events past the cursor; the relay reads at once when it does. Appenders of
	// this process can wake their relays without it (Log.Transact, Log.Committed).
	// Defaults to DefaultLogRelayHeadPollInterval; negative turns head polls off, and
	// then events committed without a wake-up wait up to a PollInterval.
	HeadPollInterval time.Duration
	// HeadPollMaxInterval is how far a relay slows its head polls once it has found
	// nothing for a second: the interval doubles every further second without events,
	// from HeadPollInterval up to this, and goes back to HeadPollInterval as soon as a
	// pass delivers. An idle relay then costs the database and its process a few dozen
	// round trips a second instead of a thousand, and the first event after a quiet
	// spell waits up to this long (half of it on average) unless an appender of this
	// process wakes the relay. Defaults to DefaultLogRelayHeadPollMaxInterval; at most
	// HeadPollInterval turns the slowing off.
	HeadPollMaxInterval time.Duration
	// RetainInterval is how often Run calls Log.Retain, beside its rounds, so that the
	// partitions every cursor has passed are emptied without the application calling
	// it (one process at a time does; the others' calls return at once). Defaults to
	// DefaultLogRelayRetainInterval; negative leaves retention to the application.
	// Step and Drain never retain.
	RetainInterval time.Duration
	// LeaseDuration is how long the server lets a relay that holds the cursor stay
	// silent before it ends the relay's session, which releases the cursor to another
	// relay. The relay speaks every third of it while it delivers. Defaults to
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
	// only read for its sign: negative disables holds, and destination faults are then
	// failures of the event. Defaults as outbox.BreakerConfig's.
	Breaker outbox.BreakerConfig
	// SkipGivenUp lets a key's events be delivered from the log past a given-up event
	// of the key in the events table, as Processor's Config.SkipGivenUp does there. By
	// default they join it there and wait, reported as blocked.
	SkipGivenUp bool
	// Clock supplies the time. Defaults to outbox.SystemClock.
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
	c.BatchSize = cmp.Or(c.BatchSize, DefaultLogRelayBatchSize)
	c.Concurrency = cmp.Or(c.Concurrency, DefaultLogRelayConcurrency)
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
	for i, t := range c.Types {
		if err := outbox.ValidateType(fmt.Sprintf("postgres.LogRelayConfig.Types[%d]", i), t); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name  string
		value int
	}{{"BatchSize", c.BatchSize}, {"MaxConcurrent", c.MaxConcurrent}, {"Concurrency", c.Concurrency}} {
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
	if c.LeaseDuration > 0 && c.LeaseDuration < 30*time.Millisecond {
		// The server's idle timeout counts milliseconds, and the relay speaks every third.
		return logRelayConfigError("LeaseDuration", fmt.Sprintf("must be at least 30ms, got %s", c.LeaseDuration))
	}
	if err := c.Retry.Validate(); err != nil {
		return nest("Retry", err)
	}
	if err := c.Breaker.Validate(); err != nil {
		return nest("Breaker", err)
	}
	return nil
}

func logRelayConfigError(field, problem string) error {
	return &outbox.FieldError{Field: "postgres.LogRelayConfig." + field, Problem: problem}
}

// nest names a part's FieldError as a field of LogRelayConfig.
func nest(part string, err error) error {
	var fe *outbox.FieldError
	if errors.As(err, &fe) {
		return logRelayConfigError(part+"."+fe.Field, fe.Problem)
	}
	return err
}

// A LogRelay delivers the log's events through a Handler, batch by batch, in the
// cursor's order (commit order between batches; see LogCursor), and moves the events
// whose delivery fails to a Store's events table, where a Processor on that Store
// retries them, gives them up, and operators retry or discard them as any event.
//
// The log's shards (log_shard.go) are delivered apart: each shard has its own position
// of the relay's cursor, and a step delivers one shard. Relays of one cursor name, in
// any number of processes, share the shards: a step takes the shard's lock without
// waiting and skips a shard that another relay holds, so one relay at a time delivers
// each shard, and a key, whose events are all in one shard, is delivered in order by
// one relay at a time. Run and Drain step Concurrency shards at once. On a log of one
// shard this is one cursor and one relay at a time, as before shards.
//
// Each step runs in one transaction of the log's database:
//
//  1. It takes the shard's cursor: a transaction-scoped advisory lock on the cursor's name
//     (pg_try_advisory_xact_lock), so that one relay at a time delivers from a cursor.
//     Another relay finds it taken and waits a PollInterval. The lock goes with the
//     transaction: when the relay's process dies, its connection closes and the server
//     releases it; when the process stops without its connection closing (frozen, or
//     cut off by the network), the server ends the session once it has been idle in
//     the transaction for LeaseDuration (idle_in_transaction_session_timeout, set for
//     this transaction), and the relay speaks every third of that while it delivers.
//     The next relay then reads from the stored position, and delivers the batch again.
//  2. It reads the stored position and a batch after it.
//  3. With the read, in the same statement, it looks up which of the batch's ordering
//     keys have an unfinished event in the events table (not completed; given-up ones
//     too unless SkipGivenUp). Those keys' events are not delivered: they join the
//     table as pending, behind it.
//  4. It delivers the others: a key's events in log order, one at a time, and
//     MaxConcurrent keys at once. A BatchHandler gets one event of each key per call,
//     the keys' next events in the next call.
//  5. It writes the outcomes and moves the cursor past the batch, in this same
//     transaction, and commits. An event whose delivery failed (an error of the event,
//     or one worth retrying) is inserted into the events table with its ID, type,
//     entity, user, payload, metadata, ordering key, priority, attempt budget and
//     creation time, as failed with attempts 1, last_error, the attempt in its history,
//     and next_attempt_at from the Retry policy (none, given up, when the error is
//     Permanent or the budget is one). The later events of its key in the batch follow
//     it there as pending, so that the Processor delivers the key in order, and every
//     later batch sends the key's events there too while any of them is unfinished.
//     The cursor never waits for a failing event.
//
// A destination fault (a DestinationError that is not merely suspected, or what
// Breaker.IsUnavailable says is one) moves nothing and spends no attempt: the step
// rolls back, the cursor stays, and the relay waits (Breaker's Cooldown, doubling up
// to MaxCooldown) and reads the batch again, one event at first as a probe, the whole
// batch once the destination answers. A fault of one target (TargetFault) holds the
// whole log, not only that target's types. A suspected fault is the destination's
// until a later delivery succeeded and the event fails so again.
//
// Delivery is at least once: a relay that dies, or whose step is cancelled, after
// delivering and before its commit leaves the cursor where it was, and the batch is
// delivered again (by the next relay to take the cursor), including the events it had
// delivered. A batch rolled back for a destination fault is delivered again too. The
// commit does not wait for its WAL flush (see ackCursor): a server crash can lose a
// step that committed, and then its batch is delivered again and its moves are made
// again, together, since they are one transaction.
//
// The events table must be in the log's database (the step's transaction writes both),
// and its events of the keys the relay delivers must come from this relay's cursor
// alone: the relay decides whether a key is blocked by what the table holds when the
// step starts.
type LogRelay struct {
	log    *Log
	store  *Store
	cfg    LogRelayConfig
	logger *slog.Logger
	shards []*logRelayShard // every shard of the log, each with its cursor of cfg.Cursor
	turn   atomic.Uint32    // the shard the next pass starts from

	takeCursor, waitCursor, read, setLease, moveEvents, ackOrAbort, ackCountOrAbort, news, pausedTypes string
	lockScope                                                                                          string // the advisory lock's first key: the cursors table

	deliver *logdelivery.Deliverer // delivery, outcomes, and holds' pacing
	runs    logdelivery.Runner     // Run, and Stop's wait for it

	// silent stops the heartbeat: tests use it for a relay whose process froze.
	silent bool
	// drainEvery makes Drain pass over every shard each time, as it did before it
	// stepped only the shards with events: the benchmark compares the two.
	drainEvery bool
}

// logRelayShard is one shard of the log as a relay delivers it.
type logRelayShard struct {
	mu     sync.Mutex // one step of the shard at a time
	cursor *LogCursor
	warm   bool // the last step left the cursor's position known: read from it speculatively
	read   int  // how many events the last step read: the next one's likely size
}

// relayBatch is a batch as a step reads it (relayRead): the positions before and after
// it (the LogBatch, whose Events stay empty), the events, and which of their ordering
// keys are blocked.
type relayBatch struct {
	LogBatch
	events  []outbox.Event
	blocked map[string]bool // nil when none is
}

// shardStep is what one step of a shard did, for the relay's passes over the shards.
type shardStep struct {
	LogRelayStep
	// base is the snapshot taken when the step took (or found taken) the shard: the
	// step read nothing committed before it that it left unread.
	base string
	// moved: the cursor moved, with events or at the end of a pair read in parts.
	moved bool
}

// takeCursor is the step's lock: the advisory lock of the cursor's name, taken for the
// transaction without waiting.
const takeCursor = `
SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2)), pg_current_snapshot()::text`

// waitCursor is takeCursor for Drain's pass over the shards that another relay held:
// it waits for the lock, until the holder's step commits, or its session ends (the
// holder's lease). The snapshot is the statement's, taken before the wait, so it is
// still older than anything the step then reads.
const waitCursor = `
SELECT (SELECT true FROM pg_advisory_xact_lock(hashtext($1), hashtext($2))), pg_current_snapshot()::text`

// logPausedTypes lists the paused types (Store.PauseType) for a step: their events
// move to the events table, where they wait until the type is resumed.
const logPausedTypes = `SELECT coalesce(array_agg(type), '{}') FROM {{paused}}`

// setLease is the rest of the step's lease: the server's limit on how long the
// transaction may sit idle (the relay's process frozen or cut off) before the server
// ends the session and so releases the lock. It ends every round trip of the step that
// reads, for a second reason: a SET takes no snapshot, and binding it drops the portal
// of the read before it, which held the read's snapshot. So the step's transaction
// holds no snapshot while it delivers (and no transaction ID until it writes its
// outcomes), and holds back neither vacuum nor anyone's snapshot, without a round trip
// of its own to drop the portal. A SET takes no parameters: %d is the lease in ms.
const setLease = `SET LOCAL idle_in_transaction_session_timeout = %d`

// relayRead is the cursor's read (readLog) with one more column: whether the events
// table holds an event of the row's ordering key that is not completed (a given-up one
// counting unless $7, SkipGivenUp), from the table's key index. Those keys' events are
// not delivered: they join their key in the table. The lookup is folded into the read,
// so that it costs no round trip of its own and no array of the batch's keys; and it
// probes the index per row only when the table holds some unfinished keyed event at
// all, which one probe of the same index (the uncorrelated subquery, run once) tells.
// In a relay whose deliveries do not fail the table holds none, and the read costs
// what the cursor's costs. That probe is written as the first key in the index's order,
// not as EXISTS, so that the planner takes the index: for EXISTS it may pick a
// sequential scan, which on a table of many completed events and a few unfinished ones
// reads the completed ones first.
const relayRead = readLogColumns + `,
    CASE WHEN e.ordering_key IS NULL
              OR (SELECT ordering_key FROM {{table}} WHERE ordering_key IS NOT NULL AND status <> 'completed'
                  ORDER BY ordering_key LIMIT 1) IS NULL
        THEN false
        ELSE EXISTS (SELECT FROM {{table}} t
                     WHERE t.ordering_key = e.ordering_key AND t.status <> 'completed'
                         AND NOT ($7::boolean AND t.status = 'failed' AND t.next_attempt_at IS NULL))
    END` + readLogRows

// moveEvents inserts events that leave the log into the events table, in the order
// given (so that the table's seq keeps each key's log order), keeping the event's ID,
// fields and creation time, with the relay's attempt when it made one. An ID the table
// already holds (a caller reusing an ID, which the log does not refuse) is left out,
// and reported by its absence from what the statement returns. Parameters: now, then
// one array per column: id, type, entity_id, user_id, status, attempts, max_attempts,
// priority, is_new_record, metadata, payload, ordering_key, created_at,
// last_attempt_at, next_attempt_at, last_error, the attempt's time in Unix µs.
const moveEvents = `
WITH m AS (
    INSERT INTO {{table}} (id, type, entity_id, user_id, status, attempts, max_attempts, priority,
        is_new_record, metadata, payload, ordering_key, created_at, updated_at, last_attempt_at,
        next_attempt_at, last_error, errors)
    SELECT e.id, e.type, e.entity_id, e.user_id, e.status, e.attempts, e.max_attempts, e.priority,
        e.is_new_record, e.metadata::jsonb, e.payload::json, e.ordering_key, e.created_at, $1,
        e.last_attempt_at, e.next_attempt_at, e.last_error,
        CASE WHEN e.attempts > 0 THEN jsonb_build_array(jsonb_build_object(
            'attempt', 1, 'at', e.at_us, 'error', e.last_error)) END
    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::integer[],
                $8::integer[], $9::integer[], $10::boolean[], $11::text[], $12::text[], $13::text[],
                $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::text[], $18::bigint[])
         WITH ORDINALITY AS e(id, type, entity_id, user_id, status, attempts, max_attempts, priority,
                              is_new_record, metadata, payload, ordering_key, created_at,
                              last_attempt_at, next_attempt_at, last_error, at_us, n)
    ORDER BY e.n
    ON CONFLICT (id) DO NOTHING
    RETURNING id, user_id
)
SELECT id, user_id FROM m`

// codeDivisionByZero is the SQLSTATE of ackOrAbort's abort.
const codeDivisionByZero = "22012"

// ackOrAbort is the cursor's compare-and-set move (ackCursor) that aborts the
// transaction when the stored position is not the batch's start, so that a COMMIT sent
// after it in the same round trip commits nothing: 1 / 0 raises division_by_zero
// (SQLSTATE 22012), which commit reports as ErrLogCursorMoved.
const ackOrAbort = `WITH acked AS (` + ackCursor + `
RETURNING 1)
SELECT 1 / count(*)::integer FROM acked`

// ackCountOrAbort is ackOrAbort that also counts the step's deliveries in its minute
// (countDelivered), for a step that delivered some: no statement, and so no round
// trip, of its own, and nothing written for a step that delivered none.
const ackCountOrAbort = `WITH acked AS (` + ackCursor + `
RETURNING 1)` + countDelivered + `
SELECT 1 / count(*)::integer FROM acked`

// NewLogRelay returns a relay that delivers the log's events through handler and moves
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
	n := newNames(store.cfg)
	var found *string
	if err := log.pool.QueryRow(ctx, `SELECT to_regclass($1)::text`, n.Table).Scan(&found); err != nil {
		return nil, fmt.Errorf("outbox/postgres: log relay: look for the events table: %w", err)
	}
	if found == nil {
		return nil, logRelayConfigError("store", fmt.Sprintf("names the events table %s, which the log's database does not hold: the relay writes both in one transaction", n.Table))
	}
	shards := make([]*logRelayShard, log.cfg.Shards)
	for i := range shards {
		c, err := log.ShardCursor(ctx, cfg.Cursor, i)
		if err != nil {
			return nil, err
		}
		shards[i] = &logRelayShard{cursor: c}
	}
	table := strings.NewReplacer("{{table}}", n.Table)
	logger := cfg.Logger.With("component", "outbox.logrelay", "cursor", cfg.Cursor)
	r := &LogRelay{
		log: log, store: store, cfg: cfg, shards: shards, logger: logger,
		deliver: logdelivery.New(handler, logdelivery.Config{
			MaxConcurrent: cfg.MaxConcurrent, HandlerTimeout: cfg.HandlerTimeout, Retry: cfg.Retry,
			Breaker: cfg.Breaker, Clock: cfg.Clock, Logger: logger, Observers: cfg.Observers,
		}),
		takeCursor:      takeCursor,
		waitCursor:      waitCursor,
		read:            table.Replace(log.n.render(relayRead)),
		setLease:        fmt.Sprintf(setLease, max(cfg.LeaseDuration.Milliseconds(), 1)),
		moveEvents:      table.Replace(moveEvents),
		pausedTypes:     strings.NewReplacer("{{paused}}", n.Paused).Replace(logPausedTypes),
		ackOrAbort:      log.n.render(ackOrAbort),
		ackCountOrAbort: log.n.render(ackCountOrAbort),
		news:            log.n.render(logHeadNews),
		lockScope:       log.n.Cursors,
	}
	// Relays start their passes at shards of their own, so that relays started together
	// do not all queue for the same shard first.
	r.turn.Store(uint32(rand.N(len(shards))))
	return r, nil
}

// Config returns the relay's configuration, defaults filled in.
func (r *LogRelay) Config() LogRelayConfig { return r.cfg }

// Waiting counts the committed events the relay's cursor has not passed, in every
// shard, and returns when the oldest of them was created (zero when none wait): what
// waits on the log, for a gauge beside the events table's counts (see
// LogCursor.Waiting for its cost). Events that a step is delivering still count until
// its commit.
func (r *LogRelay) Waiting(ctx context.Context) (events int64, oldest time.Time, err error) {
	return r.log.Waiting(ctx, r.cfg.Cursor)
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
	// Busy is true when the step found nothing to deliver in the shards it could take
	// and another relay held at least one shard (on a log of one shard: another relay
	// holds the cursor, and the step did nothing). Drain waits for such shards
	// instead: it reports Busy only beside a held batch, or with the error of a ctx
	// that ended while it waited.
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

// errLeaseLost cancels a step's deliveries when its transaction stops answering.
var errLeaseLost = errors.New("outbox/postgres: log relay: the cursor's transaction stopped answering; the batch will be delivered again")

// Step delivers one batch of one shard: it takes the shards in turn, from the one
// after the shard its last step delivered, until one has something to deliver, and
// delivers that (see LogRelay); a shard another relay holds, or one with nothing new,
// is skipped. An error leaves that shard's cursor where it was, and the batch is
// delivered again; so does a cancelled ctx, which also cuts short deliveries in
// flight. A step that found nothing reports Read 0 (and Busy when another relay held a
// shard).
//
// A shard's step costs two round trips to the server: BEGIN, the lock, the stored
// position, the read (with the lookup of the batch's ordering keys in the events
// table) and the lease go together (the read from the position this relay last left,
// which the stored one is checked against, and read again, a third round trip, when
// another relay moved it); and the moves, the cursor's move (with the count of the
// step's deliveries) and COMMIT together. A shard found idle or held costs the first
// and a ROLLBACK, and writes nothing.
func (r *LogRelay) Step(ctx context.Context) (LogRelayStep, error) {
	st, _, _, _, err := r.seek(ctx)
	return st, err
}

// seek steps the shards in turn until one delivers, moves, holds or fails, and reports
// that step; when none did, it reports whether a shard was busy, and which. It also
// returns the base of its first step (every shard's read in this pass came after it)
// and whether a step did something.
func (r *LogRelay) seek(ctx context.Context) (LogRelayStep, string, bool, []int16, error) {
	n := len(r.shards)
	start := int(r.turn.Load()) % n
	limit := r.deliver.Limit(r.cfg.BatchSize) // one event while the destination was at fault
	var (
		base string
		busy []int16
	)
	for i := range n {
		k := (start + i) % n
		st, err := r.stepShard(ctx, r.shards[k], limit, false)
		if i == 0 {
			base = st.base
		}
		if err != nil || st.Read > 0 || st.Held || st.moved {
			r.turn.Store(uint32(k + 1)) // the next step starts after this shard: each shard with work in turn
			if st.Held {
				st.RetryIn = r.deliver.Hold(st.Fault, st.Read)
			}
			return st.LogRelayStep, base, true, nil, err
		}
		if st.Busy {
			busy = append(busy, int16(k))
		}
	}
	r.turn.Store(uint32(start + 1))
	return LogRelayStep{Busy: len(busy) > 0}, base, false, busy, nil
}

// logPass is what a pass over the shards steps, and what the relay knows when it
// starts: for every shard, the events visible in base have been read (or another relay
// held the shard, and goes on with it).
type logPass struct {
	only []int16 // the shards to step; nil: every shard
	base string  // "" when not known
	ask  bool    // first find the shards with events past this relay's positions
	wait bool    // wait for each shard's lock instead of skipping a held one (Drain)
	// busy, in what round returns, are the shards another relay held in a pass that
	// did nothing.
	busy []int16
}

// round is one pass of Run or Drain over the shards that p names, Concurrency steps at
// once, each shard at most once, from a start that moves on by one shard every pass; a
// held step stops the pass from starting others. It returns the steps' sum, whether any
// did something, and what the next pass should step if this one did something (the
// shards that did: the others have nothing to read), with a base for the head poll if
// it did nothing: a snapshot that every shard's events have been read up to. While the
// destination is at fault, a pass is one probe of one event, as Step.
func (r *LogRelay) round(ctx context.Context, p logPass) (LogRelayStep, bool, logPass, error) {
	limit := r.deliver.Limit(r.cfg.BatchSize)
	if !p.wait && (len(r.shards) == 1 || limit < r.cfg.BatchSize) {
		st, base, worked, busy, err := r.seek(ctx)
		return st, worked, logPass{base: base, busy: busy}, err
	}
	if p.ask && p.only == nil {
		only, base, err := r.shardsWithNews(ctx)
		if err != nil {
			return LogRelayStep{}, false, logPass{}, err
		}
		if len(only) == 0 {
			return LogRelayStep{}, false, logPass{base: base}, nil
		}
		p = logPass{only: only, base: base}
	}
	n := len(r.shards)
	start := int(r.turn.Add(1)-1) % n
	var shards []int
	for i := range n {
		k := (start + i) % n
		if p.only == nil || slices.Contains(p.only, int16(k)) {
			shards = append(shards, k)
		}
	}
	c := min(r.cfg.Concurrency, len(shards))
	base := p.base
	if p.only == nil && c > 1 {
		// The steps start at once, so none is known to be first: take the base here.
		if err := r.log.pool.QueryRow(ctx, logHeadSnapshot).Scan(&base); err != nil {
			return LogRelayStep{}, false, logPass{}, fmt.Errorf("outbox/postgres: log relay: take a snapshot: %w", err)
		}
	}
	var (
		mu     sync.Mutex
		total  LogRelayStep
		worked bool
		did    []int16
		busy   []int16
		errs   []error
		held   atomic.Bool
		wg     sync.WaitGroup
	)
	slots := make(chan struct{}, c)
	for i, k := range shards {
		if held.Load() || ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			st, err := r.stepShard(ctx, r.shards[k], limit, p.wait)
			mu.Lock()
			defer mu.Unlock()
			if i == 0 && p.only == nil && c == 1 {
				base = st.base // the steps run one after another: the first is first
			}
			total.Read += st.Read
			total.Delivered += st.Delivered
			total.Failed += st.Failed
			total.Waiting += st.Waiting
			total.Duplicates += st.Duplicates
			if st.Busy {
				total.Busy = true
				busy = append(busy, int16(k))
			}
			if st.Held {
				held.Store(true)
				if !total.Held {
					total.Held, total.Fault = true, st.Fault
				}
			}
			if st.Read > 0 || st.moved {
				did = append(did, int16(k))
			}
			worked = worked || st.Read > 0 || st.moved || st.Held || err != nil
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if total.Held {
		total.RetryIn = r.deliver.Hold(total.Fault, total.Read)
	}
	next := logPass{only: did, base: base}
	if !worked {
		next.busy = busy
	}
	return total, worked, next, errors.Join(errs...)
}

// shardsWithNews returns the shards whose cursor's position, as this relay last knew
// it, has events visible now past it, and the snapshot it judged by: one statement
// (logHeadNews with each shard's position). A position another relay has moved since is
// older than the stored one, and only adds a shard to step; a shard in the middle of a
// pair always has some. Run asks it before a pass that a wake-up or the poll interval
// started, so that an idle relay of many shards steps only those with events.
func (r *LogRelay) shardsWithNews(ctx context.Context) ([]int16, string, error) {
	prevs := make([]string, len(r.shards))
	all := make([]int16, len(r.shards))
	for i, sh := range r.shards {
		prevs[i], all[i] = sh.cursor.position().snapshot, int16(i)
	}
	now, with, err := lookInLog(ctx, r.log.pool, r.news, prevs, all)
	if err != nil {
		return nil, "", fmt.Errorf("outbox/postgres: log relay: look for shards with events: %w", err)
	}
	return with, now, nil
}

// stepShard delivers one batch of the shard at most (limit events): it takes the
// shard's cursor (or reports Busy), reads a batch, delivers it, and commits the
// outcomes with the cursor's move (see LogRelay). A held batch is reported, not
// counted: the caller paces the relay. With wait, it waits for a shard that another
// relay holds instead (waitCursor).
func (r *LogRelay) stepShard(ctx context.Context, sh *logRelayShard, limit int, wait bool) (st shardStep, err error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	defer func() {
		// Unless the step ended with the stored position known, read it before the next.
		sh.warm = err == nil && !st.Busy
	}()
	conn, err := r.log.pool.Acquire(ctx)
	if err != nil {
		return st, fmt.Errorf("outbox/postgres: log relay: acquire a connection: %w", err)
	}
	defer conn.Release() // a connection left in a transaction is closed, not reused
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' && !conn.Conn().IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(rctx, `ROLLBACK`)
		}
	}()

	cursor := sh.cursor
	guess := cursor.position()
	start := time.Now()
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(genericPlanOnly) // the read on its generic plan, as the head poll's look (log_wake.go)
	take := r.takeCursor
	if wait {
		take = r.waitCursor
	}
	b.Queue(take, r.lockScope, cursor.name)
	b.Queue(r.log.loadCursor, cursor.name)
	b.Queue(r.pausedTypes)
	if sh.warm {
		b.Queue(r.read, r.readArgs(cursor, guess, limit)...)
	}
	b.Queue(r.setLease)
	var (
		locked bool
		from   logPosition
		batch  *relayBatch
		paused []string
	)
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		for range 2 { // BEGIN, and the plan setting
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("outbox/postgres: log relay: begin: %w", err)
			}
		}
		if err := br.QueryRow().Scan(&locked, &st.base); err != nil {
			return fmt.Errorf("outbox/postgres: log relay: take cursor %q: %w", cursor.name, err)
		}
		rows, err := br.Query()
		if err == nil {
			from, err = cursor.positionFrom(rows)
		}
		if err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&paused); err != nil {
			return fmt.Errorf("outbox/postgres: log relay: read paused types: %w", err)
		}
		if sh.warm {
			rows, err := br.Query()
			if err != nil {
				return fmt.Errorf("outbox/postgres: read log cursor %q: %w", cursor.name, err)
			}
			if batch, err = r.batchFrom(sh, rows, guess, limit); err != nil {
				return err
			}
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("outbox/postgres: log relay: set the lease: %w", err)
		}
		return br.Close()
	}()
	if err != nil {
		return st, err
	}
	if !locked {
		st.Busy = true
		return st, nil
	}
	if batch == nil || from != guess {
		// Another relay moved the cursor since this one last did (or this one has not
		// read yet): read from where it is.
		if batch, err = r.readFrom(ctx, conn, sh, from, limit); err != nil {
			return st, err
		}
	}
	st.Read = len(batch.events)
	if len(batch.events) == 0 {
		if batch.to == batch.from {
			cursor.setPosition(from)
			return st, nil // nothing committed since: the transaction wrote nothing
		}
		// The end of a pair read in parts: record it.
		st.moved = true
		return st, r.commit(ctx, conn, cursor, &batch.LogBatch, nil, &st.LogRelayStep)
	}
	r.deliver.Read(st.Read, time.Since(start))
	events := logdelivery.InScope(batch.events, r.cfg.Types)
	groups, _ := logdelivery.Groups(events)
	var pausedSet map[string]bool
	if len(paused) > 0 {
		pausedSet = make(map[string]bool, len(paused))
		for _, t := range paused {
			pausedSet[t] = true
		}
	}
	deliver := logdelivery.Deliverable(events, groups, batch.blocked, pausedSet)

	// Deliver while the transaction is kept alive; a transaction that stops answering
	// cuts the deliveries short.
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopBeat := r.heartbeat(dctx, conn, cancel)
	results := r.deliver.Deliver(dctx, events, deliver)
	stopBeat()
	if cause := context.Cause(dctx); cause != nil {
		return st, fmt.Errorf("outbox/postgres: log relay: delivery interrupted, the batch will be delivered again: %w", cause)
	}

	sum := logdelivery.Summarize(groups, results)
	st.Delivered = sum.Delivered
	if sum.Fault != nil {
		st.Held, st.Fault = true, sum.Fault
		cursor.setPosition(from)
		return st, nil
	}
	moves := make([]logMove, len(sum.Moves))
	for k, m := range sum.Moves {
		moves[k] = logMove{event: &events[m.Index], failed: m.Failed}
	}
	if err := r.commit(ctx, conn, cursor, &batch.LogBatch, moves, &st.LogRelayStep); err != nil {
		return st, err
	}
	st.moved = true
	if sum.Answered {
		r.deliver.Answered()
	}
	return st, nil
}

// readArgs are relayRead's arguments for a read of the cursor from the position from.
func (r *LogRelay) readArgs(cursor *LogCursor, from logPosition, limit int) []any {
	return append(cursor.readArgs(from, limit), r.cfg.SkipGivenUp)
}

// readFrom reads a batch of the shard from the position from on conn, in the step's
// transaction (relayRead), and drops the read's portal in the same round trip
// (setLease).
func (r *LogRelay) readFrom(ctx context.Context, conn *pgxpool.Conn, sh *logRelayShard, from logPosition, limit int) (*relayBatch, error) {
	b := &pgx.Batch{}
	b.Queue(r.read, r.readArgs(sh.cursor, from, limit)...)
	b.Queue(r.setLease)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log cursor %q: %w", sh.cursor.name, err)
	}
	batch, err := r.batchFrom(sh, rows, from, limit)
	if err != nil {
		return nil, err
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("outbox/postgres: log relay: set the lease: %w", err)
	}
	return batch, br.Close()
}

// batchFrom reads the rows of relayRead from the position from, up to limit events, and
// closes them. It decodes the events straight into the slice the deliveries are made
// from (a LogCursor's LogEvents would be one more copy of the batch), sized at the
// first event for what the shard's last step read (a whole batch while a backlog
// drains), so that a batch of a thousand events is not copied as its slice grows.
func (r *LogRelay) batchFrom(sh *logRelayShard, rows pgx.Rows, from logPosition, limit int) (*relayBatch, error) {
	defer rows.Close()
	b := &relayBatch{LogBatch: LogBatch{from: from}}
	var (
		snapshot      string
		xid, limitXID uint64
		held          bool
	)
	for rows.Next() {
		if b.events == nil {
			b.events = make([]outbox.Event, 0, min(max(sh.read, 1), limit)+1)
		}
		b.events = append(b.events, outbox.Event{})
		e := &b.events[len(b.events)-1]
		ok, err := scanLogRow(rows, &snapshot, &xid, e, &held)
		if err != nil {
			return nil, fmt.Errorf("outbox/postgres: read log cursor %q: %w", sh.cursor.name, err)
		}
		if !ok {
			b.events = b.events[:len(b.events)-1]
			continue
		}
		if len(b.events) == limit {
			limitXID = xid
		}
		if held && e.OrderingKey != "" {
			if b.blocked == nil {
				b.blocked = map[string]bool{}
			}
			b.blocked[e.OrderingKey] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log cursor %q: %w", sh.cursor.name, err)
	}
	if snapshot == "" {
		return nil, fmt.Errorf("outbox/postgres: read log cursor %q: read returned no snapshot", sh.cursor.name)
	}
	n := len(b.events)
	var limitSeq int64
	if n > limit {
		limitSeq = b.events[limit-1].Seq
		b.events = b.events[:limit]
	}
	b.to = positionAfter(from, snapshot, n, limit, limitXID, limitSeq)
	sh.read = len(b.events)
	return b, nil
}

// heartbeat runs a statement on conn's transaction every third of the lease while the
// deliveries run, so that the server's idle timeout ends the session only of a relay
// that stopped. When it fails, it cancels the deliveries. The returned function stops
// it; conn may be used again after it returns.
//
// The first beat waits a third of the lease too: the step's read left no portal, and
// so no snapshot, to drop (see setLease). The statement goes by the simple protocol
// (pgx's Exec without arguments), whose portal the server drops when it is done.
func (r *LogRelay) heartbeat(ctx context.Context, conn *pgxpool.Conn, cancel context.CancelCauseFunc) (stop func()) {
	if r.silent {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
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
			if _, err := conn.Exec(ctx, `SELECT 1`); err != nil && ctx.Err() == nil {
				r.logger.Error("the cursor's transaction stopped answering: deliveries cut short", "err", err)
				cancel(fmt.Errorf("%w: %w", errLeaseLost, err))
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// logMove is an event that leaves the log for the events table: failed, with its
// attempt, or pending behind an earlier event of its key.
type logMove struct {
	event  *outbox.Event
	failed *logdelivery.Result // nil: pending
}

// commit writes the moves, the cursor's new position and the count of the step's
// deliveries (st.Delivered; see Log.Delivered), and commits, in one round trip. A
// cursor moved meanwhile by another reader of its name (a LogCursor used outside a
// relay: the lock keeps relays apart) aborts the transaction before the COMMIT, so
// that nothing is moved either.
func (r *LogRelay) commit(ctx context.Context, conn *pgxpool.Conn, cursor *LogCursor, batch *LogBatch, moves []logMove, st *LogRelayStep) error {
	b := &pgx.Batch{}
	if len(moves) > 0 {
		args, err := r.moveArgs(moves)
		if err != nil {
			return err
		}
		b.Queue(r.moveEvents, args...)
	}
	if st.Delivered > 0 {
		// The minute of the relay's clock, so that a test's clock decides it.
		args := append(cursor.ackArgs(batch), logdelivery.Minute(r.cfg.Clock.Now()), int64(st.Delivered))
		b.Queue(r.ackCountOrAbort, args...)
	} else {
		b.Queue(r.ackOrAbort, cursor.ackArgs(batch)...)
	}
	b.Queue(`COMMIT`)
	inserted := map[string]string{}
	err := func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		if len(moves) > 0 {
			rows, err := br.Query()
			if err != nil {
				return fmt.Errorf("outbox/postgres: log relay: move events to the events table: %w", err)
			}
			var (
				id   pgtype.UUID
				user string
			)
			// The log's events carry their IDs as uuidString spells them, as these do.
			if _, err := pgx.ForEachRow(rows, []any{&id, &user}, func() error {
				inserted[uuidString(id)] = user
				return nil
			}); err != nil {
				return fmt.Errorf("outbox/postgres: log relay: move events to the events table: %w", err)
			}
		}
		if _, err := br.Exec(); err != nil {
			if code, _ := pgCode(err); code == codeDivisionByZero {
				return ErrLogCursorMoved
			}
			return fmt.Errorf("outbox/postgres: ack log cursor %q: %w", cursor.name, err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("outbox/postgres: log relay: commit (whether it took effect is unknown; the batch is delivered again if not): %w", err)
		}
		return br.Close()
	}()
	if err != nil {
		return err
	}
	cursor.setPosition(batch.to)
	users := map[string]struct{}{}
	for _, m := range moves {
		u, ok := inserted[m.event.ID]
		switch {
		case !ok:
			st.Duplicates++
			r.logger.Error("event not moved to the events table: an event of its ID is already there (the log does not refuse a reused ID)",
				"event_id", m.event.ID, "type", m.event.Type)
		case m.failed != nil && m.failed.Kind == logdelivery.Failed:
			st.Failed++
			users[u] = struct{}{}
		default:
			st.Waiting++
			users[u] = struct{}{}
		}
	}
	if len(users) > 0 {
		r.store.wake.committed(users) // the Processor's retries and waiting events
	}
	return nil
}

// moveArgs are moveEvents' arguments for the moves, in order.
func (r *LogRelay) moveArgs(moves []logMove) ([]any, error) {
	n := len(moves)
	ids := make([]pgtype.UUID, n)
	types, entities, users, statuses := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempts, maxAttempts, priorities := make([]int32, n), make([]int32, n), make([]int32, n)
	isNew := make([]bool, n)
	metadata, payloads, keys, lastErrors := make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	created, lastAttempt, next := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	at := make([]int64, n)
	for i, m := range moves {
		e := m.event
		u, err := uuid.Parse(e.ID)
		if err != nil {
			return nil, fmt.Errorf("outbox/postgres: log relay: event ID %q: %w", e.ID, err)
		}
		ids[i] = pgtype.UUID{Bytes: u, Valid: true}
		types[i], entities[i], users[i] = e.Type, e.EntityID, e.UserID
		maxAttempts[i], priorities[i], isNew[i] = int32(e.MaxAttempts), int32(e.Priority), e.IsNewRecord
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("outbox/postgres: log relay: encode metadata: %w", err)
			}
			s := string(b)
			metadata[i] = &s
		}
		payloads[i], keys[i] = nullString(string(e.Payload)), nullString(e.OrderingKey)
		created[i] = ts(e.CreatedAt)
		if f := m.failed; f != nil && f.Kind == logdelivery.TargetHeld {
			// Held at its target: pending as it was, the attempt not counted (no
			// history), with the reason, where the Processor holds the target.
			statuses[i], next[i] = string(outbox.StatusPending), created[i]
			text := logdelivery.HeldText(f.Err)
			lastErrors[i] = &text
		} else if f != nil {
			statuses[i], attempts[i] = string(outbox.StatusFailed), 1
			lastAttempt[i], next[i] = ts(f.At), ts(f.Next) // a zero next gives it up
			text := logdelivery.ErrorText(f.Err)
			lastErrors[i] = &text
			at[i] = outbox.Timestamp(f.At).UnixMicro()
		} else {
			// Pending, due since it was written, as an event enqueued to the table is.
			statuses[i] = string(outbox.StatusPending)
			next[i] = created[i]
		}
	}
	return []any{ts(r.cfg.Clock.Now()), ids, types, entities, users, statuses, attempts, maxAttempts,
		priorities, isNew, metadata, payloads, keys, created, lastAttempt, next, lastErrors, at}, nil
}

// Drain delivers until no shard has events past the relay's cursor, or the destination
// holds a batch, and returns the sum of what it did (Held, Fault and RetryIn are the
// last pass's). It steps Concurrency shards at once. Its first pass steps every shard;
// then, as Run does, it steps only the shards that had something, until a pass finds
// nothing, and then looks in every shard for events past this relay's positions (one
// statement, as Run after a wake-up) and goes on with those that have some. So a shard
// with nothing costs one step, not one in every pass.
//
// A shard that another relay holds is not left behind: when a pass over every shard
// (or the shards the look found) delivered nothing but found some held, Drain waits
// for their locks, one after another (until the holder's step commits, or its session
// ends after its lease), and steps them. So when Drain returns
// without an error, what was committed before it was called has been delivered, by
// this relay or another. ctx bounds the wait; when it ends there, Drain returns an
// error that says so, and Busy.
func (r *LogRelay) Drain(ctx context.Context) (LogRelayStep, error) {
	var total LogRelayStep
	p := logPass{} // every shard
	whole := true  // p covered every shard (or p waits, after a pass that did)
	for {
		st, worked, next, err := r.round(ctx, p)
		total.add(st)
		switch {
		case err != nil && p.wait:
			total.Busy = true
			return total, fmt.Errorf("outbox/postgres: log relay: wait for the shards that another relay holds (%v): %w", p.only, err)
		case err != nil || st.Held:
			return total, err
		case worked && !r.drainEvery && 0 < len(next.only) && len(next.only) < len(r.shards):
			p, whole = logPass{only: next.only}, false
		case worked:
			p, whole = logPass{}, true
		case !whole:
			// The shards left out since the pass that covered them all may have events
			// committed since; and one of them may be free while this pass's are held.
			p, whole = logPass{ask: true}, true
		case len(next.busy) > 0:
			p = logPass{only: next.busy, wait: true}
		default:
			return total, nil
		}
	}
}

// retain calls Log.Retain for Run, on a goroutine of its own beside the steps, so that
// deliveries do not wait for its truncations (each a transaction with a commit; a
// relay that retained between its rounds delayed the events that came meanwhile by
// 20-50 ms, bench/ run 15). A partition that a step of this relay is reading is locked
// by it: Retain waits at most MaintenanceLockTimeout for it, and leaves it for the next
// interval. Its failure is logged and left for the next interval: retention only frees
// space.
func (r *LogRelay) retain(ctx context.Context) {
	res, err := r.log.Retain(ctx)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.logger.Warn("log retention failed; the relay tries again after its retain interval",
				"err", err, "retry_in", r.cfg.RetainInterval)
		}
	case len(res.Truncated) > 0:
		r.logger.Info("log retained", "partitions_truncated", len(res.Truncated), "bytes_freed", res.Freed(),
			"horizon", res.Horizon, "held_by", res.HeldBy, "busy", len(res.Busy))
	default:
		r.logger.Debug("log retention: nothing to empty", "horizon", res.Horizon, "held_by", res.HeldBy,
			"busy", len(res.Busy), "skipped", res.Skipped)
	}
}

// Run delivers until ctx ends, and returns ctx's error. It passes over the shards,
// Concurrency at once, and passes again at once over those that had something while a
// pass found work. When a pass found nothing (each shard idle, or held by another relay,
// which goes on with it), it passes again as soon as a head poll finds events in some
// shard (then over those shards only), an appender of this process says it committed
// (Log.Transact, Log.Committed), or a PollInterval has passed (then over the shards
// that one statement finds events past this relay's positions in); see log_wake.go.
// Its head polls are faster for a moment after an append of its process
// (log_appendhint.go). It waits RetryIn after a held batch, and backs off (up to a
// PollInterval) while the database fails. Every RetainInterval it calls Log.Retain,
// beside its passes. Stop makes it return nil after the pass in flight. A second Run
// of the relay while one goes fails with an error.
func (r *LogRelay) Run(ctx context.Context) error {
	ctx, stopping, finish, err := r.runs.Start(ctx)
	if err != nil {
		return fmt.Errorf("outbox/postgres: log relay: %w", err)
	}
	defer finish()
	var (
		background sync.WaitGroup // retention, beside the steps
		retaining  atomic.Bool
	)
	defer background.Wait()
	r.logger.Info("log relay started", "batch_size", r.cfg.BatchSize, "max_concurrent", r.cfg.MaxConcurrent,
		"poll_interval", r.cfg.PollInterval, "head_poll_interval", r.cfg.HeadPollInterval,
		"shards", len(r.shards), "concurrency", r.cfg.Concurrency)
	wake, unsubscribe := r.log.wakeups().Subscribe("")
	defer unsubscribe()
	appended, unsubscribeAppends := r.log.appends.Subscribe("")
	defer unsubscribeAppends()
	head := newLogHead(r.log.pool, r.log)
	var (
		errDelay time.Duration
		pass     logPass   // what the next pass steps
		retained time.Time // when Run last called Retain; zero: not yet, so at once
		idleFrom time.Time // when the passes began to find nothing; zero: the last one delivered
		readFrom time.Time // when the last pass that delivered began (real time, for the append hint)
	)
	for {
		select {
		case <-stopping:
			return nil
		default:
		}
		if r.cfg.RetainInterval > 0 && r.cfg.Clock.Now().Sub(retained) >= r.cfg.RetainInterval && retaining.CompareAndSwap(false, true) {
			retained = r.cfg.Clock.Now()
			background.Go(func() {
				defer retaining.Store(false)
				r.retain(ctx)
			})
		}
		began := time.Now()
		st, worked, next, err := r.round(ctx, pass)
		pass = logPass{}
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
		case worked:
			// Go on with the shards that had something; the others have been read up to
			// the pass's base.
			errDelay, idleFrom, readFrom = 0, time.Time{}, began
			if len(next.only) > 0 && next.base != "" {
				pass = next
			}
			continue
		default:
			errDelay = 0
			if idleFrom.IsZero() {
				idleFrom = r.cfg.Clock.Now()
			}
			every := r.cfg.headPollEvery(r.cfg.Clock.Now().Sub(idleFrom))
			only, at, err := r.awaitNews(ctx, head, stopping, wake, appended, next.base, every, readFrom)
			if err != nil {
				return err
			}
			if only != nil {
				pass = logPass{only: only, base: at} // the head poll found them at at
			} else {
				pass = logPass{ask: true} // a wake-up, or the poll interval: find them first
			}
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

// Stop asks Run to return once its pass in flight has finished, its steps delivered
// and committed, and waits for it until ctx ends; then it cancels the steps, whose
// batches the next relay delivers again, and returns ctx's error. Without a Run going
// it returns nil at once, and the next Run returns before its first step: a Stop on a
// signal that came before the goroutine meant to Run had begun stops it all the same.
func (r *LogRelay) Stop(ctx context.Context) error { return r.runs.Stop(ctx) }
