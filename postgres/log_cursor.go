package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// A LogCursor reads the log by transaction snapshots, as PgQ does. Its position is a
// snapshot S (pg_current_snapshot() as text): every event whose transaction is
// visible in S has been delivered, and no other. A read takes a new snapshot N and
// returns the events visible in N and not in S; acknowledging the batch makes N the
// position. A transaction is visible in a snapshot once it has committed, and then in
// every later one, so each committed event falls in exactly one pair (S, N): none is
// skipped, however late its transaction commits, and none is read twice. A rolled back
// transaction is never visible, and its events never read. Nothing waits for a long
// transaction: it is in S's list of running transactions (its xip) until it commits,
// and meanwhile the events of every other commit go past it.
//
// Why not what watermill-sql does (read events whose xid < pg_snapshot_xmin(now)):
// that is one snapshot instead of two, but xmin is the oldest running transaction, so
// one transaction left open pauses every reader until it ends. Why not gap-guessing
// (read by seq, wait a while at a gap for the missing seq to commit): a gap may be a
// rollback or a transaction slower than the wait, and then events are lost.
//
// Order: pairs are read in commit order: every event of a pair committed before the
// later snapshot N was taken, and every event of the next pair after it. Within a pair,
// events come by (xid, seq): transactions in the order they were assigned their IDs
// (when they first wrote), each transaction's events together in the order appended.
// So when a transaction commits before another one begins writing, its events come
// first; of two transactions that overlapped and both committed between two reads, the
// one that began writing first comes first, whichever committed first. PostgreSQL does
// not tell a reader the commit order of overlapping transactions (without
// track_commit_timestamp), and the cursor does not promise it.
//
// A batch is bounded by a limit. When a pair holds more events than the limit, the
// position keeps the pair and the last (xid, seq) delivered of it, and the next read
// goes on in the same pair, with the same N: events that commit meanwhile wait for the
// next pair, and none of the pair's is skipped.
//
// A cursor reads one shard of the log (log_shard.go): on a log of one shard, the whole
// log; on a sharded log, each shard has a position of its own per cursor name
// (Log.ShardCursor), and the order above holds within the shard, which is all a key
// needs, since a key's events are all in one shard.
//
// A LogCursor is safe for concurrent use, though one reader per cursor name is the
// intended use: two would read the same events, and the second to acknowledge gets
// ErrLogCursorMoved.
type LogCursor struct {
	log   *Log
	name  string // the cursors table's row: the name, and "/shard" on a sharded log
	shard int16

	mu  sync.Mutex
	pos logPosition // as stored, the last this cursor loaded or acknowledged
}

// logPosition is a cursor's place in the log, as its row stores it.
type logPosition struct {
	// snapshot: every event visible in it has been delivered.
	snapshot string
	// next: "" or, while a pair is delivered in parts, its later snapshot; then
	// (afterXID, afterSeq) is the last event of the pair delivered.
	next     string
	afterXID string
	afterSeq int64
}

// firstSnapshot is the position of a new cursor: a snapshot in which no transaction is
// visible (xmin = xmax = 1, below every transaction ID), so the first read delivers
// every event in the log.
const firstSnapshot = "1:1:"

// LogEvent is an event read from the log, with the transaction that wrote it.
type LogEvent struct {
	outbox.Event
	// XID is the writer's top-level transaction ID (xid8).
	XID uint64
}

// LogBatch is what one Read returned: the events and the positions before and after
// them. Acknowledge it with the LogCursor that read it.
type LogBatch struct {
	Events   []LogEvent
	from, to logPosition
}

// createCursor makes a cursor's row, of one shard, at the start of the log, unless it
// exists.
const createCursor = `
INSERT INTO {{cursors}} (name, snapshot, shard) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING`

// loadCursor reads a cursor's position.
const loadCursor = `
SELECT snapshot, coalesce(next, ''), coalesce(after_xid, '0')::text, coalesce(after_seq, 0)
FROM {{cursors}} WHERE name = $1`

// ackCursor moves a cursor from the position its batch was read from to the one after
// the batch, and only from there: a row that moved meanwhile (another reader of the
// name acknowledged) is left alone, and the caller told.
//
// Its commit does not wait for the WAL to reach disk (synchronous_commit off, for
// this transaction only): an acknowledgement lost in a server crash moves the cursor
// back to a position it had, and the batch is read again, which at least once allows.
// A reader then pays no disk flush per batch.
const ackCursor = `
WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {{cursors}}
SET snapshot = $2, next = $3, after_xid = $4::text::xid8, after_seq = $5, updated_at = now()
FROM async
WHERE name = $1 AND snapshot = $6 AND next IS NOT DISTINCT FROM $7
    AND after_xid IS NOT DISTINCT FROM $8::text::xid8 AND after_seq IS NOT DISTINCT FROM $9`

// readLog reads the events of shard $6 visible in snapshot next ($2, or a new one when
// NULL) and not in snapshot prev ($1), after (xid, seq) ($3, $4), in (xid, seq) order,
// at most $5 of them. The new snapshot comes back on every row, and alone (with NULL event
// columns) when there are no events.
//
// "Not visible in prev" is written as the two places such an xid can be, each an
// index range of the primary key (shard, xid, seq) within the shard, so that a read costs the events it returns and the
// rows of transactions still open, not the whole log since the oldest open
// transaction:
//   - xid >= xmax(prev): transactions that had not finished when prev was taken;
//   - xid in xip(prev): those running when prev was taken.
//
// The second range is a probe per running transaction, not xid = ANY(xip): with the
// shard before it in the key, a list of xids is no longer the key's first column, and
// PostgreSQL 15 then cannot return the rows in order, and sorts every row of those
// transactions, or filters the whole shard. Each probe returns at most the limit, so
// what is sorted is bounded by the number of running transactions times the limit. The
// probe's xid is a range of one (>= and <=, not =), which the planner estimates as it
// does the first range: with = it may plan a sequential scan and a sort for partitions
// that are empty when it plans, and a cached generic plan would keep them.
//
// (An xid below xmax(prev) and not in xip(prev) had committed, and is visible in
// prev, or rolled back, and has no rows to see.) "Visible in next" is tested by
// pg_visible_in_snapshot rather than left to the statement's own snapshot: a read that
// goes on in a pair runs later than next was taken, and must not return what
// committed since.
//
// The log is partitioned (log_retention.go), so each range is a merge of the
// partitions' index ranges. The ranges' LIMIT is the pair's column lim rather than $5 so
// that the planner does not know it: it then plans to fetch a fraction of the rows and
// picks the merge, which stops after the limit. Knowing the limit, it compares it with
// its guess for ranges whose bounds it cannot see (a few rows) and may pick a Sort of
// every row in them instead, which grows with the backlog.
const readLog = readLogColumns + readLogRows

// readLogColumns and readLogRows are readLog's parts, apart so that LogRelay's read
// (relayRead) can add a column between them and keep the rest.
const readLogColumns = `
WITH pair AS MATERIALIZED (
    SELECT $1::text::pg_snapshot AS prev,
           coalesce($2::text::pg_snapshot, pg_current_snapshot()) AS next,
           $5::bigint AS lim
)
SELECT pair.next::text, e.xid::text, e.seq, e.id, e.type, e.entity_id, e.user_id,
    e.ordering_key, e.max_attempts, e.priority, e.is_new_record, e.metadata::text,
    e.payload::text, e.created_at`

const readLogRows = `
FROM pair LEFT JOIN LATERAL (
    SELECT c.* FROM (
        (SELECT * FROM {{log}}
         WHERE shard = $6::smallint
             AND xid >= pg_snapshot_xmax(pair.prev) AND xid < pg_snapshot_xmax(pair.next)
             AND (xid, seq) > ($3::text::xid8, $4::bigint)
             AND pg_visible_in_snapshot(xid, pair.next)
         ORDER BY xid, seq LIMIT pair.lim)
        UNION ALL
        (SELECT r.* FROM unnest(ARRAY(SELECT pg_snapshot_xip(pair.prev))) AS x(xid)
         CROSS JOIN LATERAL (
             SELECT * FROM {{log}}
             WHERE shard = $6::smallint AND xid >= x.xid AND xid <= x.xid
                 AND (xid, seq) > ($3::text::xid8, $4::bigint)
                 AND pg_visible_in_snapshot(xid, pair.next)
             ORDER BY xid, seq LIMIT pair.lim) r
         ORDER BY r.xid, r.seq LIMIT pair.lim)
    ) c
    ORDER BY c.xid, c.seq LIMIT $5
) e ON true`

// Cursor returns the cursor of the given name, creating it at the start of the log
// (its first read delivers every event) when there is none. Cursors of different
// names read the log independently. A log of more than one shard has a position per
// shard: there Cursor fails with ErrLogSharded, and ShardCursor opens one shard's.
func (l *Log) Cursor(ctx context.Context, name string) (*LogCursor, error) {
	if l.cfg.Shards > 1 {
		return nil, fmt.Errorf("log cursor %q: %w", name, ErrLogSharded)
	}
	return l.ShardCursor(ctx, name, 0)
}

// ErrLogCursorExists is returned by CopyCursor when the log already has a cursor of
// the new name (in any shard).
var ErrLogCursorExists = errors.New("outbox/postgres: log cursor exists")

// lockCursorRows waits for the locks a LogRelay takes on the given cursor rows while
// it delivers from them (takeCursor), in the order given, and holds them for the
// transaction.
const lockCursorRows = `
SELECT count(pg_advisory_xact_lock(hashtext($1), hashtext(r))) FROM unnest($2::text[]) AS r`

// countCursorRows counts the stored rows of two cursor names.
const countCursorRows = `
SELECT count(*) FILTER (WHERE name = ANY($1)), count(*) FILTER (WHERE name = ANY($2))
FROM {{cursors}} WHERE name = ANY($1) OR name = ANY($2)`

// copyCursor gives each stored row of one cursor a twin under another name, with its
// position: row $1[i] is copied to $2[i].
const copyCursor = `
INSERT INTO {{cursors}} (name, shard, snapshot, next, after_xid, after_seq)
SELECT r.dst, c.shard, c.snapshot, c.next, c.after_xid, c.after_seq
FROM unnest($1::text[], $2::text[]) AS r(src, dst)
JOIN {{cursors}} c ON c.name = r.src`

// CopyCursor creates the cursor to at the position of the cursor from, in every
// shard, so that a relay of to starts where from is instead of at the oldest event the
// log still holds. It is how one relay's cursor is split into scopes
// (LogRelayConfig.Types): stop the relay of from, copy its cursor into one cursor per
// scope, start the scoped relays, and drop from (DropCursor), which would otherwise
// hold retention back for good. Between them the scopes then deliver every event from
// has not passed, and none that it has.
//
// It waits for a step of a relay of from in flight to commit, and keeps from's relays
// from moving it until the copy commits, so that Retain never removes what to has not
// passed. It fails with ErrLogCursorExists when to exists (in any shard), and with
// ErrLogCursorNotFound when from does not (no relay or reader of it has run).
func (l *Log) CopyCursor(ctx context.Context, from, to string) error {
	if from == "" || to == "" || from == to {
		return fmt.Errorf("%w: copy log cursor %q to %q: the names must differ and not be empty", outbox.ErrInvalid, from, to)
	}
	src, dst := make([]string, l.cfg.Shards), make([]string, l.cfg.Shards)
	for i := range src {
		src[i], dst[i] = l.cursorRow(from, i), l.cursorRow(to, i)
	}
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockCursorRows, l.n.Cursors, src); err != nil {
			return err
		}
		var nFrom, nTo int
		if err := tx.QueryRow(ctx, l.n.render(countCursorRows), src, dst).Scan(&nFrom, &nTo); err != nil {
			return err
		}
		switch {
		case nTo > 0:
			return ErrLogCursorExists
		case nFrom == 0:
			return ErrLogCursorNotFound
		}
		// A shard where from has no row yet is at the start of the log for from, and
		// stays so for to, which gets no row there either.
		_, err := tx.Exec(ctx, l.n.render(copyCursor), src, dst)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation {
			return ErrLogCursorExists // a reader of to made its row meanwhile
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox/postgres: copy log cursor %q to %q: %w", from, to, err)
	}
	return nil
}

// Name returns the name of the cursor's row: the name it was opened with, followed by
// "/" and the shard on a log of more than one shard.
func (c *LogCursor) Name() string { return c.name }

// Shard returns the shard the cursor reads.
func (c *LogCursor) Shard() int { return int(c.shard) }

// load reads the stored position; c.mu is held or c not yet shared.
func (c *LogCursor) load(ctx context.Context) error {
	var p logPosition
	if err := c.log.pool.QueryRow(ctx, c.log.loadCursor, c.name).Scan(&p.snapshot, &p.next, &p.afterXID, &p.afterSeq); err != nil {
		return fmt.Errorf("outbox/postgres: load log cursor %q: %w", c.name, err)
	}
	c.pos = p
	return nil
}

// Read returns the next events after the cursor's position, at most limit of them
// (limit > 0), without moving it: until the batch is acknowledged, every Read (and
// every cursor of the same name, after a crash) reads the same events again, and
// perhaps more. An empty batch means nothing has committed since the position;
// acknowledging it is a no-op.
//
// A row that breaks the SQL contract (written by SQL from another language: an empty
// type, metadata that is not an object of strings, …) is read all the same, with the
// problem in its event's Unusable; a caller delivers it no more than the relays do.
func (c *LogCursor) Read(ctx context.Context, limit int) (*LogBatch, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: log cursor read: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	c.mu.Lock()
	from := c.pos
	c.mu.Unlock()
	return c.readFrom(ctx, c.log.pool, from, limit)
}

// logQuerier is what the cursor's statements run on: the pool, or a transaction of a
// reader that holds the cursor (LogRelay).
type logQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// readFrom reads up to limit events after the position from, on q.
func (c *LogCursor) readFrom(ctx context.Context, q logQuerier, from logPosition, limit int) (*LogBatch, error) {
	rows, err := q.Query(ctx, c.log.readLog, c.readArgs(from, limit)...)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log cursor %q: %w", c.name, err)
	}
	return c.batchFrom(rows, from, limit)
}

// readArgs are readLog's arguments for a read of up to limit events after from: one
// more than the limit, to know whether the pair goes on past it.
func (c *LogCursor) readArgs(from logPosition, limit int) []any {
	var next, afterXID any // NULL when a new pair starts
	afterXID = "0"
	if from.next != "" {
		next, afterXID = from.next, from.afterXID
	}
	return []any{from.snapshot, next, afterXID, from.afterSeq, limit + 1, c.shard}
}

// batchFrom reads the rows of a read from the position from, up to limit events, and
// closes them.
func (c *LogCursor) batchFrom(rows pgx.Rows, from logPosition, limit int) (*LogBatch, error) {
	snapshot, events, err := scanLogEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log cursor %q: %w", c.name, err)
	}
	b := &LogBatch{from: from, Events: events[:min(len(events), limit)]}
	var last LogEvent
	if len(events) > limit {
		last = events[limit-1]
	}
	b.to = positionAfter(from, snapshot, len(events), limit, last.XID, last.Seq)
	return b, nil
}

// positionAfter is the position after a batch read from the position from up to the
// snapshot: n rows read for a limit, and, when n is more than the limit, (xid, seq) of
// the batch's last event.
func positionAfter(from logPosition, snapshot string, n, limit int, xid uint64, seq int64) logPosition {
	switch {
	case n > limit:
		// The pair goes on: keep it, and where this batch ends in it.
		return logPosition{snapshot: from.snapshot, next: snapshot, afterXID: strconv.FormatUint(xid, 10), afterSeq: seq}
	case n == 0 && from.next == "":
		// Nothing committed since the position: stay, so that an idle reader writes
		// nothing. The position's snapshot only gets older, which costs nothing: its
		// running transactions are a short list, and nothing after it has committed.
		return from
	default:
		return logPosition{snapshot: snapshot}
	}
}

// loadFrom reads the cursor's stored position on q, without keeping it.
func (c *LogCursor) loadFrom(ctx context.Context, q logQuerier) (logPosition, error) {
	rows, err := q.Query(ctx, c.log.loadCursor, c.name)
	if err != nil {
		return logPosition{}, fmt.Errorf("outbox/postgres: load log cursor %q: %w", c.name, err)
	}
	return c.positionFrom(rows)
}

// positionFrom reads the row of loadCursor and closes it.
func (c *LogCursor) positionFrom(rows pgx.Rows) (logPosition, error) {
	p, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (logPosition, error) {
		var p logPosition
		err := row.Scan(&p.snapshot, &p.next, &p.afterXID, &p.afterSeq)
		return p, err
	})
	if err != nil {
		return logPosition{}, fmt.Errorf("outbox/postgres: load log cursor %q: %w", c.name, err)
	}
	return p, nil
}

// position returns the position the cursor last loaded or acknowledged.
func (c *LogCursor) position() logPosition {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos
}

// Ack records that the batch's events have been delivered: the cursor moves past
// them, and later reads, by this cursor or any of its name, start after them. A batch
// read from a position that has moved meanwhile fails with ErrLogCursorMoved.
func (c *LogCursor) Ack(ctx context.Context, b *LogBatch) error {
	if b == nil {
		return fmt.Errorf("%w: log cursor ack: batch must not be nil", outbox.ErrInvalid)
	}
	if b.to == b.from {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	moved, err := c.ackOn(ctx, c.log.pool, b)
	if err != nil {
		return err
	}
	if moved {
		if err := c.load(ctx); err != nil {
			return errors.Join(ErrLogCursorMoved, err)
		}
		return ErrLogCursorMoved
	}
	c.pos = b.to
	return nil
}

// ackOn moves the stored position from b's start to its end on q, and reports whether
// the stored position was not b's start (moved: nothing written). It commits without
// waiting for the WAL flush when q's transaction commits (see ackCursor).
func (c *LogCursor) ackOn(ctx context.Context, q logQuerier, b *LogBatch) (moved bool, err error) {
	tag, err := q.Exec(ctx, c.log.ackCursor, c.ackArgs(b)...)
	if err != nil {
		return false, fmt.Errorf("outbox/postgres: ack log cursor %q: %w", c.name, err)
	}
	return tag.RowsAffected() == 0, nil
}

// ackArgs are ackCursor's arguments for b.
func (c *LogCursor) ackArgs(b *LogBatch) []any {
	to, from := b.to, b.from
	return []any{c.name,
		to.snapshot, nullString(to.next), positionXID(to), positionSeq(to),
		from.snapshot, nullString(from.next), positionXID(from), positionSeq(from)}
}

// setPosition records a position the cursor's row was moved to by a transaction of
// its owner (LogRelay) that has committed.
func (c *LogCursor) setPosition(p logPosition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pos = p
}

// positionXID and positionSeq are the after_xid and after_seq a position is stored
// with: NULL unless a pair is being delivered in parts.
func positionXID(p logPosition) *string {
	if p.next == "" {
		return nil
	}
	return &p.afterXID
}

func positionSeq(p logPosition) *int64 {
	if p.next == "" {
		return nil
	}
	return &p.afterSeq
}

// scanLogEvents reads the rows of readLog and closes them: the snapshot they were read
// up to, and the events.
func scanLogEvents(rows pgx.Rows) (string, []LogEvent, error) {
	defer rows.Close()
	var (
		snapshot string
		events   []LogEvent
	)
	for rows.Next() {
		var e LogEvent
		ok, err := scanLogRow(rows, &snapshot, &e.XID, &e.Event)
		if err != nil {
			return "", nil, err
		}
		if ok {
			events = append(events, e)
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, err
	}
	if snapshot == "" {
		return "", nil, errors.New("read returned no snapshot")
	}
	return snapshot, events, nil
}

// scanLogRow decodes the current row of readLog (or of a statement that adds columns
// after readLog's, into more) into the snapshot, the transaction ID and the event, and
// reports whether the row holds one: an empty read's row holds only the snapshot.
func scanLogRow(rows pgx.Rows, snapshot *string, xid *uint64, e *outbox.Event, more ...any) (bool, error) {
	var (
		xidText, key, metadata, payload *string
		seq                             *int64
		id                              pgtype.UUID
		typ, entity, user               pgtype.Text
		maxAttempts, priority           pgtype.Int4
		isNew                           pgtype.Bool
		created                         pgtype.Timestamptz
	)
	dest := append([]any{snapshot, &xidText, &seq, &id, &typ, &entity, &user, &key, &maxAttempts,
		&priority, &isNew, &metadata, &payload, &created}, more...)
	if err := rows.Scan(dest...); err != nil {
		return false, err
	}
	if xidText == nil {
		return false, nil // the row of an empty read: only the snapshot
	}
	x, err := strconv.ParseUint(*xidText, 10, 64)
	if err != nil {
		return false, fmt.Errorf("parse xid %q: %w", *xidText, err)
	}
	*xid = x
	e.ID, e.Seq = uuidString(id), *seq
	e.Type, e.EntityID, e.UserID, e.OrderingKey = typ.String, entity.String, user.String, deref(key)
	e.MaxAttempts, e.Priority, e.IsNewRecord = int(maxAttempts.Int32), int(priority.Int32), isNew.Bool
	// What a writer in another language may put where the contract does not allow
	// (the log has no CHECK): an empty type or entity ID, and metadata that is JSON but
	// not an object of strings. It leaves the field empty and is named in the event's
	// Unusable, for the relay to give the event up with: failing the read would stop
	// the cursor at the row for good.
	var problems column.Problems
	column.CheckRequired(e.Type, e.EntityID, &problems)
	if metadata != nil {
		var problem string
		e.Metadata, problem = column.DecodeMetadata([]byte(*metadata))
		problems.Add(problem)
	}
	e.Unusable = problems.String()
	if payload != nil {
		e.Payload = json.RawMessage(*payload)
	}
	// What AppendTx's caller held: a pending event, due when it was written.
	e.Status = outbox.StatusPending
	e.CreatedAt = created.Time.UTC()
	e.UpdatedAt, e.NextAttemptAt = e.CreatedAt, e.CreatedAt
	return true, nil
}
