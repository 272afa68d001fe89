package postgres

// Retention by partition (issue 24). The log is a ring of partitions by transaction ID
// (logmigrations/002_partition_log.sql, keyed by the ring_pos column since
// 004_ring_position_column.sql): a row's partition is its xid modulo the ring's span,
// PartitionXIDs consecutive xids to a partition, Partitions partitions in turn, then
// the first again. Events that every cursor has passed go away with a TRUNCATE of
// their whole partition, never a DELETE: no dead rows, no vacuum, and the space goes
// back to the operating system at once.
//
// Why a ring and not ranges of xid created ahead and dropped behind: every xid has a
// partition, so an append never fails for want of one and nothing has to create
// partitions in time; and no DDL ever touches the parent. The locks the alternatives
// take on the parent (PostgreSQL 15):
//
//   - CREATE TABLE … PARTITION OF, DETACH PARTITION and DROP TABLE of a partition take
//     ACCESS EXCLUSIVE on the parent. Every append takes ROW EXCLUSIVE on the parent, so
//     appends wait for the DDL, and, worse, for as long as the DDL's request waits in the
//     queue behind a reader (a relay's step holds its read's lock while it delivers).
//   - ATTACH PARTITION and DETACH … CONCURRENTLY take SHARE UPDATE EXCLUSIVE, which
//     appends do not wait for; but ATTACH also takes ACCESS EXCLUSIVE on, and scans, a
//     DEFAULT partition (the only way to make an append never fail with ranges), and
//     DETACH CONCURRENTLY is not allowed at all while there is a DEFAULT partition.
//   - TRUNCATE of a partition takes ACCESS EXCLUSIVE on that partition only. An append
//     locks only the partition its row goes to, so appends to other partitions go on.
//
// So Retain truncates, and only a partition that appenders are not writing to: one
// whose current lap of xids is wholly behind every cursor and every running
// transaction, with the head of the log at least a partition away from its next lap.
//
// What waits for Retain: the cursor's read names the parent and cannot know at plan time
// which partitions it needs, so it locks all of them (ACCESS SHARE), and conflicts with a
// TRUNCATE. A read waits while Retain's lock request is queued (at most
// MaintenanceLockTimeout, after which Retain gives up on that partition until its next
// call) and while the TRUNCATE runs (milliseconds). Appenders do not wait.
//
// When a partition may be emptied. Let H be the smaller of
//   - the xmin of every cursor's stored snapshot: every event with a lower xid is
//     visible in that snapshot, so delivered, or was rolled back; and
//   - pg_snapshot_xmin(pg_current_snapshot()): every transaction with a lower xid has
//     ended, so none can still append an event below it.
// A partition whose rows lie in the lap [lo, hi) of xids may be emptied when hi <= H:
// it holds no event a cursor still needs, and none can be added to that lap. H only
// grows (cursors move forward, transactions end), except that a new cursor starts at the
// beginning of what is kept. With no cursor at all, nothing is removed (as SQLite's Trim).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// DefaultLogPartitions is LogConfig.Partitions' default: the number of partitions
	// of the ring. A read visits each partition's index (two ranges each), so more
	// partitions cost every read; fewer make each partition a larger share of the ring.
	DefaultLogPartitions = 16
	// DefaultLogPartitionXIDs is LogConfig.PartitionXIDs' default: 65,536 transaction
	// IDs a partition, a ring of about a million. At 1,000 write transactions a second
	// (of the whole server: every transaction that writes takes an xid) a partition
	// fills in about a minute, and the ring comes round in about 17 minutes.
	DefaultLogPartitionXIDs = 1 << 16
	// DefaultLogMaintenanceLockTimeout is LogConfig.MaintenanceLockTimeout's default.
	DefaultLogMaintenanceLockTimeout = 100 * time.Millisecond

	// logRetainNoWaitFor bounds how long Retain asks for a partition's lock without
	// queueing before it waits in the queue (truncatePartition).
	logRetainNoWaitFor = 50 * time.Millisecond

	minLogPartitions, maxLogPartitions = 2, 64
	maxLogPartitionXIDs                = 1 << 40
)

// codeLockNotAvailable is lock_timeout's SQLSTATE.
const codeLockNotAvailable = "55P03"

// ErrLogCursorNotFound is returned by DropCursor when the log has no cursor of the name.
var ErrLogCursorNotFound = errors.New("outbox/postgres: log cursor not found")

// ErrLogCursorBusy is returned by DropCursor when a LogRelay is delivering from the
// cursor at that moment (it holds the cursor's lock).
var ErrLogCursorBusy = errors.New("outbox/postgres: log cursor is in use by a relay")

func (c LogConfig) validateRing() error {
	if c.Partitions < minLogPartitions || c.Partitions > maxLogPartitions {
		return logConfigError("Partitions", fmt.Sprintf("must be from %d to %d, got %d", minLogPartitions, maxLogPartitions, c.Partitions))
	}
	if c.PartitionXIDs < 1 || c.PartitionXIDs > maxLogPartitionXIDs {
		return logConfigError("PartitionXIDs", fmt.Sprintf("must be from 1 to %d, got %d", int64(maxLogPartitionXIDs), c.PartitionXIDs))
	}
	if c.MaintenanceLockTimeout < time.Millisecond {
		return logConfigError("MaintenanceLockTimeout", fmt.Sprintf("must be at least a millisecond, got %s", c.MaintenanceLockTimeout))
	}
	return nil
}

// RingXIDs is the span of xids the ring covers once round; migrations call it.
func (n logNames) RingXIDs() int64 { return int64(n.Partitions) * n.PartitionXIDs }

// logSlot is one partition of the ring as a migration creates it.
type logSlot struct {
	Table, PKey string // quoted: "schema"."outbox_log_p00", "outbox_log_p00_pkey"
	From, To    int64  // its range of xid modulo the ring's span
}

// Slots lists the ring's partitions; migrations call it.
func (n logNames) Slots() []logSlot {
	slots := make([]logSlot, n.Partitions)
	for i := range slots {
		name := n.slotName(i)
		slots[i] = logSlot{
			Table: pgx.Identifier{n.schema, name}.Sanitize(),
			PKey:  pgx.Identifier{name + "_pkey"}.Sanitize(),
			From:  int64(i) * n.PartitionXIDs, To: int64(i+1) * n.PartitionXIDs,
		}
	}
	return slots
}

func (n logNames) slotName(i int) string { return fmt.Sprintf("%s_p%02d", n.table, i) }

// logPartition is one partition of the ring as the catalog describes it, and what it
// holds.
type logPartition struct {
	name     string // unquoted
	from, to int64  // its range of xid modulo span
	span     int64  // the ring's span

	newest uint64 // the highest xid in it; 0 when empty
	bytes  int64
}

// lapEnd returns the end of the run of xids that holds the partition's newest row:
// every row in it has a lower xid.
func (p logPartition) lapEnd() uint64 {
	return p.newest - p.newest%uint64(p.span) + uint64(p.to)
}

// nearHead reports whether appenders may be writing to p now or in the next moments:
// whether its share of the ring holds any xid from a partition's width before the head
// to a partition's width after it.
func (p logPartition) nearHead(head uint64) bool {
	width, span := uint64(p.to-p.from), uint64(p.span)
	lo := head - min(head, width)
	n := head + width - lo
	if n >= span {
		return true
	}
	a, from, to := lo%span, uint64(p.from), uint64(p.to)
	if a+n <= span {
		return a < to && from < a+n
	}
	return a < to || from < a+n-span // [a, span) and [0, a+n-span)
}

// partitionBound reads the bound PostgreSQL prints for a partition of the ring.
var partitionBound = regexp.MustCompile(`^FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)$`)

// logPartitionsQuery lists the ring's partitions and their bounds from the catalog.
const logPartitionsQuery = `
SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass
ORDER BY c.relname`

// partitions returns the ring's partitions as the catalog has them (not as the config
// says: a log keeps the ring it was made with), each with its newest xid and its size.
// The newest xid comes from each partition's primary key read backwards, one index
// descent a partition; it is the newest committed row (or the caller's own).
func (l *Log) partitions(ctx context.Context, q logQuerier) ([]logPartition, error) {
	rows, err := q.Query(ctx, logPartitionsQuery, l.n.Table)
	if err != nil {
		return nil, err
	}
	var (
		parts      []logPartition
		name, expr string
		span       int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &expr}, func() error {
		m := partitionBound.FindStringSubmatch(expr)
		if m == nil {
			return fmt.Errorf("partition %s has the bound %q, not a range of the ring", name, expr)
		}
		from, _ := strconv.ParseInt(m[1], 10, 64)
		to, _ := strconv.ParseInt(m[2], 10, 64)
		parts = append(parts, logPartition{name: name, from: from, to: to})
		span = max(span, to)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%s has no partitions", l.n.Table)
	}
	var sql strings.Builder
	for i, p := range parts {
		if i > 0 {
			sql.WriteString("\nUNION ALL ")
		}
		fmt.Fprintf(&sql, `SELECT %d, %s`, i, l.partitionState(p.name))
	}
	rows, err = q.Query(ctx, sql.String())
	if err != nil {
		return nil, err
	}
	var (
		i      int
		newest string
		size   int64
	)
	_, err = pgx.ForEachRow(rows, []any{&i, &newest, &size}, func() error {
		x, err := strconv.ParseUint(newest, 10, 64)
		if err != nil {
			return fmt.Errorf("parse xid %q: %w", newest, err)
		}
		parts[i].newest, parts[i].span, parts[i].bytes = x, span, size
		return nil
	})
	if err != nil {
		return nil, err
	}
	return parts, nil
}

// partitionState is the select list that reads a partition's newest xid ('0' when it is
// empty) and its size in bytes, with its indexes and TOAST.
func (l *Log) partitionState(name string) string {
	t := pgx.Identifier{l.cfg.Schema, name}.Sanitize()
	return fmt.Sprintf(`coalesce((SELECT max(xid) FROM %s), '0')::text, pg_total_relation_size('%s'::regclass)`, t, t)
}

// logHorizonQuery reads what bounds retention: the oldest running transaction, the next
// xid to be assigned (the head), and the cursor furthest behind with its snapshot's xmin.
const logHorizonQuery = `
SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
    coalesce(c.name, ''), coalesce(pg_snapshot_xmin(c.snapshot::pg_snapshot), '0')::text
FROM pg_current_snapshot() AS s
LEFT JOIN LATERAL (
    SELECT name, snapshot FROM {{cursors}}
    ORDER BY pg_snapshot_xmin(snapshot::pg_snapshot), name LIMIT 1
) c ON true`

// logHorizon is what bounds retention at one moment.
type logHorizon struct {
	running    uint64 // pg_snapshot_xmin(pg_current_snapshot())
	head       uint64 // pg_snapshot_xmax(pg_current_snapshot()): no xid at or above it is assigned
	cursor     string // the cursor furthest behind, "" when there is none
	cursorXMin uint64 // its snapshot's xmin
}

func (l *Log) horizon(ctx context.Context, q logQuerier) (logHorizon, error) {
	rows, err := q.Query(ctx, l.n.render(logHorizonQuery))
	if err != nil {
		return logHorizon{}, err
	}
	return pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (logHorizon, error) { return scanHorizon(row) })
}

// scanHorizon reads logHorizonQuery's row.
func scanHorizon(row pgx.Row) (logHorizon, error) {
	var running, head, xmin string
	var h logHorizon
	if err := row.Scan(&running, &head, &h.cursor, &xmin); err != nil {
		return logHorizon{}, err
	}
	for _, f := range []struct {
		s string
		x *uint64
	}{{running, &h.running}, {head, &h.head}, {xmin, &h.cursorXMin}} {
		var err error
		if *f.x, err = strconv.ParseUint(f.s, 10, 64); err != nil {
			return logHorizon{}, fmt.Errorf("parse xid %q: %w", f.s, err)
		}
	}
	return h, nil
}

// value is H: every event with a lower xid has been passed by every cursor, and no
// running transaction can append one. 0 when there is no cursor: then nothing is passed.
func (h logHorizon) value() uint64 {
	if h.cursor == "" {
		return 0
	}
	return min(h.running, h.cursorXMin)
}

// heldBy names the cursor when its position is what bounds retention, and is "" when a
// running transaction does (or there is no cursor).
func (h logHorizon) heldBy() string {
	if h.cursor != "" && h.cursorXMin <= h.running {
		return h.cursor
	}
	return ""
}

// removable reports whether p may be emptied: it holds rows, every xid of the run its
// newest row is in (and so of every row it holds) is below the horizon, and it is not
// where the head is, so that no appender is about to write to it (an appender that
// does meanwhile, holding an old xid, waits for the TRUNCATE).
func (p logPartition) removable(h logHorizon) bool {
	return p.newest != 0 && p.lapEnd() <= h.value() && !p.nearHead(h.head)
}

// LogPartition describes one partition of the log's ring.
type LogPartition struct {
	// Name is the partition's table, in the log's schema.
	Name string
	// Newest is the highest xid among its events (0 when empty).
	Newest uint64
	// Bytes is its size with its index and TOAST (pg_total_relation_size).
	Bytes int64
}

func (p logPartition) public() LogPartition {
	return LogPartition{Name: p.name, Newest: p.newest, Bytes: p.bytes}
}

// LogRetention is what one Retain call found and did.
type LogRetention struct {
	// Skipped: another process was running Retain on this log, and this call did
	// nothing.
	Skipped bool
	// Horizon is H: every cursor has passed every event with a lower xid, and no running
	// transaction can append one. 0 when the log has no cursor, and then nothing is
	// removed.
	Horizon uint64
	// HeldBy names the cursor furthest behind when its position set the horizon; "" when
	// a running transaction (of any database of the server) set it instead.
	HeldBy string
	// Truncated are the partitions this call emptied, with what they held.
	Truncated []LogPartition
	// Busy are partitions that could have been emptied but were not locked within
	// MaintenanceLockTimeout (a reader held them); the next call tries again.
	Busy []LogPartition
	// Kept are the partitions holding events not yet passed (or whose next lap of xids
	// is about to be written).
	Kept []LogPartition
}

// Freed is the number of bytes the truncated partitions held.
func (r *LogRetention) Freed() int64 {
	var n int64
	for _, p := range r.Truncated {
		n += p.Bytes
	}
	return n
}

// Retain empties the partitions of the log that every cursor has passed and that no
// transaction can still write to (see the top of log_retention.go), each with a TRUNCATE
// in a transaction of its own, and reports what it did. It never waits for a lock longer
// than MaintenanceLockTimeout: a partition a reader holds is left for the next call.
// Appenders never wait for it. The ring's partitions all exist from the migration on,
// so there is nothing to create ahead.
//
// It is safe to call from many processes at once: one runs (a session advisory lock on
// the log), and the others return at once with Skipped. Whoever delivers from the log
// should call it every so often, between batches and not inside a transaction that has
// read the log (that transaction's lock would make Retain wait for it): a LogRelay after
// a step, or any process on a timer. With no cursor, no event is removed.
//
// It also deletes the relays' counts of deliveries older than LogDeliveredRetention
// (Log.Delivered), a range of a small table's key.
func (l *Log) Retain(ctx context.Context) (*LogRetention, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: retain log: %w", err)
	}
	defer conn.Release()
	lockKey := "outbox retain " + l.n.Table
	var mine bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, lockKey).Scan(&mine); err != nil {
		return nil, fmt.Errorf("outbox/postgres: retain log: take advisory lock: %w", err)
	}
	if !mine {
		return &LogRetention{Skipped: true}, nil
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lockKey); err != nil {
			conn.Conn().Close(context.Background()) // the server drops the lock with the session
		}
	}()
	if err := l.retainDelivered(ctx, conn); err != nil {
		return nil, err
	}
	h, err := l.horizon(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: retain log: read horizon: %w", err)
	}
	parts, err := l.partitions(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: retain log: read partitions: %w", err)
	}
	r := &LogRetention{Horizon: h.value(), HeldBy: h.heldBy()}
	for _, p := range parts {
		switch {
		case p.newest == 0:
		case !p.removable(h):
			r.Kept = append(r.Kept, p.public())
		default:
			outcome, was, err := l.truncatePartition(ctx, conn, p)
			if err != nil {
				return r, fmt.Errorf("outbox/postgres: retain log: partition %s: %w", p.name, err)
			}
			switch outcome {
			case partitionTruncated:
				r.Truncated = append(r.Truncated, was.public())
			case partitionBusy:
				r.Busy = append(r.Busy, p.public())
			case partitionKept:
				r.Kept = append(r.Kept, was.public())
			}
		}
	}
	return r, nil
}

type partitionOutcome int

const (
	partitionTruncated partitionOutcome = iota
	partitionBusy
	partitionKept
)

// truncatePartition locks p, within MaintenanceLockTimeout, and truncates it if it may
// still be emptied: under the lock no append to it is in flight, so what it holds and
// the horizon are read again first. It returns the partition as it was.
//
// Every read of the log takes a share lock on every partition for its transaction (a
// relay's step holds it while it delivers), and a lock request that waits in the
// server's queue makes every read that comes after it wait too. So Retain first asks
// for the lock without queueing (NOWAIT), again and again, for up to half the timeout
// (at most logRetainNoWaitFor), and only then waits in the queue for the rest, so that
// a log read without pause is still retained. And once it has the lock, it holds it for
// as few round trips as it can: the lock, the horizon and the partition's state go in
// one, the TRUNCATE and the COMMIT in the next. TestLogRetainDoesNotQueueReadsBehindIt
// shows the reads going on; a latency A/B showed no change in the relay's slowest events
// (bench/results/log-latency-retain-ab.txt).
func (l *Log) truncatePartition(ctx context.Context, conn logConn, p logPartition) (outcome partitionOutcome, was logPartition, err error) {
	t := pgx.Identifier{l.cfg.Schema, p.name}.Sanitize()
	noWaitUntil := time.Now().Add(min(l.cfg.MaintenanceLockTimeout/2, l.retainNoWaitFor()))
	pause := 100 * time.Microsecond
	open := false // a transaction is open on conn
	defer func() {
		if open {
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	for {
		queued := !time.Now().Before(noWaitUntil)
		lock := `LOCK TABLE ` + t + ` IN ACCESS EXCLUSIVE MODE NOWAIT`
		if queued {
			lock = `LOCK TABLE ` + t + ` IN ACCESS EXCLUSIVE MODE`
		}
		l.countRetainLockTry()
		h, got, err := l.lockAndLook(ctx, conn, p, lock)
		open = true
		if err != nil {
			return 0, p, err
		}
		if got != nil {
			if !got.removable(h) {
				return partitionKept, *got, nil
			}
			// The commit does not wait for its WAL to reach disk (synchronous_commit off,
			// set in lockAndLook for this transaction only), so the lock is held for the
			// truncation alone. A truncation lost in a server crash empties a partition that
			// every cursor had passed: Retain does it again.
			b := &pgx.Batch{}
			b.Queue(`TRUNCATE ` + t)
			b.Queue(`COMMIT`)
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				return 0, p, err
			}
			open = false
			return partitionTruncated, *got, nil
		}
		// Refused, or timed out in the queue: the transaction is aborted.
		if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
			return 0, p, err
		}
		open = false
		if queued {
			return partitionBusy, p, nil
		}
		wait := min(time.Duration(rand.Int64N(int64(pause)))+time.Microsecond, time.Until(noWaitUntil))
		pause = min(2*pause, 2*time.Millisecond)
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return 0, p, ctx.Err()
		case <-timer.C:
		}
	}
}

// lockAndLook begins a transaction on conn, takes p's lock with the statement lock,
// and reads the horizon and p's state under it, all in one round trip. It leaves the
// transaction open. got is nil when the lock was not granted (NOWAIT refused, or the
// queued wait passed MaintenanceLockTimeout); then the transaction is aborted.
func (l *Log) lockAndLook(ctx context.Context, conn logConn, p logPartition, lock string) (h logHorizon, got *logPartition, err error) {
	// The queued request's bound (NOWAIT does not wait): the other half of the timeout.
	timeout := strconv.FormatInt(max(l.cfg.MaintenanceLockTimeout.Milliseconds()/2, 1), 10) + "ms"
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SELECT set_config('lock_timeout', $1, true), set_config('synchronous_commit', 'off', true)`, timeout)
	b.Queue(lock)
	b.Queue(l.n.render(logHorizonQuery))
	b.Queue(`SELECT ` + l.partitionState(p.name))
	br := conn.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil && got != nil {
			err = cerr
		}
	}()
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return h, nil, err
		}
	}
	if _, err := br.Exec(); err != nil {
		if code, _ := pgCode(err); code == codeLockNotAvailable {
			return h, nil, nil
		}
		return h, nil, err
	}
	if h, err = scanHorizon(br.QueryRow()); err != nil {
		return h, nil, err
	}
	var newest string
	if err := br.QueryRow().Scan(&newest, &p.bytes); err != nil {
		return h, nil, err
	}
	if p.newest, err = strconv.ParseUint(newest, 10, 64); err != nil {
		return h, nil, fmt.Errorf("parse xid %q: %w", newest, err)
	}
	return h, &p, nil
}

// retainNoWaitFor is logRetainNoWaitFor, or a test's.
func (l *Log) retainNoWaitFor() time.Duration {
	if d := time.Duration(l.retainNoWait.Load()); d > 0 {
		return d
	}
	return logRetainNoWaitFor
}

// countRetainLockTry counts Retain's requests for a partition's lock, for tests.
func (l *Log) countRetainLockTry() { l.retainLockTries.Add(1) }

// logConn is the connection Retain works on: its transactions are begun and ended by
// statements, so that a step of one takes one round trip.
type logConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// LogCursorPosition tells how far back a cursor holds the log: on a log of more than
// one shard, the cursor's position in one shard.
type LogCursorPosition struct {
	// Name is the cursor's name, followed by "/" and the shard on a log of more than
	// one shard (as LogCursor.Name).
	Name string
	// XMin is the xmin of its stored snapshot: it has passed every event with a lower
	// xid, and Retain keeps every partition whose events reach XMin or beyond.
	XMin uint64
	// Behind is how many transaction IDs have been assigned since XMin (by the whole
	// server: not all of them wrote to the log).
	Behind uint64
	// Oldest is the created_at of the first event at or after XMin in log order that is
	// still in the log; zero when there is none.
	Oldest time.Time
	// Holds is the size, in bytes, of the partitions Retain keeps for this cursor: those
	// whose current lap of xids reaches past XMin.
	Holds int64
	// UpdatedAt is when the cursor last moved.
	UpdatedAt time.Time
}

// logCursorPositionsQuery lists the cursors (a row per shard of each) from the one
// furthest behind, with the first event of its shard at or after each one's xmin (an
// index range of each partition, merged).
const logCursorPositionsQuery = `
SELECT c.name, pg_snapshot_xmin(c.snapshot::pg_snapshot)::text,
    pg_snapshot_xmax(pg_current_snapshot())::text, c.updated_at,
    (SELECT e.created_at FROM {{log}} e
     WHERE e.shard = c.shard AND e.xid >= pg_snapshot_xmin(c.snapshot::pg_snapshot)
     ORDER BY e.xid, e.seq LIMIT 1)
FROM {{cursors}} c
ORDER BY pg_snapshot_xmin(c.snapshot::pg_snapshot), c.name`

// CursorPositions lists the log's cursors, the one furthest behind first, with how far
// back each holds the log; on a log of more than one shard, each shard's position of
// each cursor, all of which Retain counts. A cursor that no one reads any more holds it
// back for good: drop it with DropCursor.
func (l *Log) CursorPositions(ctx context.Context) ([]LogCursorPosition, error) {
	rows, err := l.pool.Query(ctx, l.n.render(logCursorPositionsQuery))
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: log cursor positions: %w", err)
	}
	var (
		out        []LogCursorPosition
		p          LogCursorPosition
		xmin, head string
		oldest     *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&p.Name, &xmin, &head, &p.UpdatedAt, &oldest}, func() error {
		x, err := strconv.ParseUint(xmin, 10, 64)
		if err != nil {
			return fmt.Errorf("parse xid %q: %w", xmin, err)
		}
		hd, err := strconv.ParseUint(head, 10, 64)
		if err != nil {
			return fmt.Errorf("parse xid %q: %w", head, err)
		}
		p.XMin, p.Behind, p.Oldest = x, hd-min(hd, x), time.Time{}
		if oldest != nil {
			p.Oldest = oldest.UTC()
		}
		p.UpdatedAt = p.UpdatedAt.UTC()
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: log cursor positions: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	parts, err := l.partitions(ctx, l.pool)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: log cursor positions: read partitions: %w", err)
	}
	for i := range out {
		for _, part := range parts {
			if part.newest != 0 && part.lapEnd() > out[i].XMin {
				out[i].Holds += part.bytes
			}
		}
	}
	return out, nil
}

// DropCursor deletes the cursor of the given name, in every shard, so that it no longer
// holds the log back: use it for a cursor that no one reads any more. It fails with
// ErrLogCursorNotFound when there is no such cursor, and with ErrLogCursorBusy when a
// LogRelay is delivering from it (from any of its shards) at that moment. A LogCursor
// of the name still in use gets ErrLogCursorMoved at its next Ack; Cursor(name)
// afterwards creates a new cursor, at the oldest event kept.
func (l *Log) DropCursor(ctx context.Context, name string) error {
	rows := make([]string, l.cfg.Shards)
	for i := range rows {
		rows[i] = l.cursorRow(name, i)
	}
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		// The locks a LogRelay holds while it delivers from a shard of the cursor
		// (log_relay.go): all of them, or the relay is busy with the cursor.
		var free bool
		if err := tx.QueryRow(ctx, `SELECT bool_and(pg_try_advisory_xact_lock(hashtext($1), hashtext(r)))
			FROM unnest($2::text[]) AS r`, l.n.Cursors, rows).Scan(&free); err != nil {
			return err
		}
		if !free {
			return ErrLogCursorBusy
		}
		tag, err := tx.Exec(ctx, l.n.render(`DELETE FROM {{cursors}} WHERE name = ANY($1)`), rows)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrLogCursorNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox/postgres: drop log cursor %q: %w", name, err)
	}
	return nil
}
