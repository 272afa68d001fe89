package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// A LogCursor reads the log in rowid order, which on SQLite is commit order (see the
// comment at the top of log.go). Its position is a rowid, stored under the cursor's
// name: every event at or below it has been delivered. Read returns the events after
// the position, at most a limit of them, without moving it; Ack moves it past a
// batch. So delivery is at least once: a reader that dies between the two, or never
// acknowledges, reads the same events again.
//
// A LogCursor is safe for concurrent use, though one reader per cursor name is the
// intended use: two would read the same events, and the second to acknowledge gets
// ErrLogCursorMoved.
type LogCursor struct {
	log  *Log
	name string

	mu    sync.Mutex
	after int64 // the position, as stored: the last this cursor loaded or acknowledged
}

// LogBatch is what one Read returned: the events and the positions before and after
// them. Acknowledge it with the LogCursor that read it.
type LogBatch struct {
	Events   []outbox.Event
	from, to int64
}

// createLogCursor makes a cursor's row at the start of the log, unless it exists.
const createLogCursor = `
INSERT INTO outbox_log_cursors (name, after_seq, updated_at) VALUES (?, 0, ?)
ON CONFLICT (name) DO NOTHING`

const loadLogCursor = `SELECT after_seq FROM outbox_log_cursors WHERE name = ?`

// readLog is the next events after a position, by the primary key: a range of the
// rowid, read from one committed snapshot.
const readLog = `
SELECT ` + logEventColumns + `
FROM outbox_log WHERE seq > ? ORDER BY seq LIMIT ?`

// logEventColumns are the columns scanLogEvents reads.
const logEventColumns = `seq, id, type, entity_id, user_id, ordering_key, max_attempts, priority,
    is_new_record, metadata, payload, created_at`

// ackLogCursor moves a cursor from the position its batch was read from to the one
// after the batch, and only from there: a row that moved meanwhile (another reader of
// the name acknowledged) is left alone, and the caller told.
const ackLogCursor = `
UPDATE outbox_log_cursors SET after_seq = ?, updated_at = ?
WHERE name = ? AND after_seq = ?`

// Cursor returns the cursor of the given name, creating it at the start of the log
// (its first read delivers every event the log holds) when there is none. Cursors of
// different names read the log independently.
func (l *Log) Cursor(ctx context.Context, name string) (*LogCursor, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: log cursor name must not be empty", outbox.ErrInvalid)
	}
	if _, err := l.db.ExecContext(ctx, createLogCursor, name, time.Now().UnixMicro()); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: create log cursor %q: %w", name, err)
	}
	c := &LogCursor{log: l, name: name}
	if err := c.load(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Name returns the cursor's name.
func (c *LogCursor) Name() string { return c.name }

// Position returns the rowid the cursor last loaded or acknowledged: every event at
// or below it has been delivered.
func (c *LogCursor) Position() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.after
}

// setPosition records a position the caller read from the cursor's row (a relay
// that took the cursor's lease, or whose move was refused).
func (c *LogCursor) setPosition(after int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.after = after
}

// reload reads the stored position.
func (c *LogCursor) reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.load(ctx)
}

// load reads the stored position; c.mu is held or c not yet shared.
func (c *LogCursor) load(ctx context.Context) error {
	if err := c.log.db.QueryRowContext(ctx, loadLogCursor, c.name).Scan(&c.after); err != nil {
		return fmt.Errorf("outbox/sqlite: load log cursor %q: %w", c.name, err)
	}
	return nil
}

// Read returns the next events after the cursor's position, in commit order, at most
// limit of them (limit > 0), without moving it: until the batch is acknowledged,
// every Read (and every cursor of the same name, after a crash) reads the same events
// again, and perhaps more. An empty batch means nothing has committed since the
// position; acknowledging it is a no-op.
//
// A row that breaks the SQL contract (written by SQL from another language: an empty
// type, metadata that is not an object of strings, …) is read all the same, with the
// problem in its event's Unusable; a caller delivers it no more than the relays do.
func (c *LogCursor) Read(ctx context.Context, limit int) (*LogBatch, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: log cursor read: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	c.mu.Lock()
	from := c.after
	c.mu.Unlock()
	rows, err := c.log.read.QueryContext(ctx, from, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: read log cursor %q: %w", c.name, err)
	}
	events, err := scanLogEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: read log cursor %q: %w", c.name, err)
	}
	b := &LogBatch{Events: events, from: from, to: from}
	if len(events) > 0 {
		b.to = events[len(events)-1].Seq
		return b, nil
	}
	// Nothing after the position. Is the log's largest rowid still at or above it?
	// Trim keeps it so; a hand-made delete may not have, and then new events would
	// get rowids the cursor has passed.
	if from > 0 {
		var last sql.NullInt64
		if err := c.log.db.QueryRowContext(ctx, `SELECT max(seq) FROM outbox_log`).Scan(&last); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: read log cursor %q: %w", c.name, err)
		}
		if last.Int64 < from {
			return nil, fmt.Errorf("%w: cursor %q is at %d, the log's largest rowid is %d", ErrLogRewound, c.name, from, last.Int64)
		}
	}
	return b, nil
}

// Ack records that the batch's events have been delivered: the cursor moves past
// them, and later reads, by this cursor or any of its name, start after them. It is
// one short write transaction. A batch read from a position that has moved meanwhile
// fails with ErrLogCursorMoved.
func (c *LogCursor) Ack(ctx context.Context, b *LogBatch) error {
	if b == nil {
		return fmt.Errorf("%w: log cursor ack: batch must not be nil", outbox.ErrInvalid)
	}
	if b.to == b.from {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.log.ack.ExecContext(ctx, b.to, time.Now().UnixMicro(), c.name, b.from)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: ack log cursor %q: %w", c.name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox/sqlite: ack log cursor %q: %w", c.name, err)
	}
	if n == 0 {
		if err := c.load(ctx); err != nil {
			return errors.Join(ErrLogCursorMoved, err)
		}
		return ErrLogCursorMoved
	}
	c.after = b.to
	return nil
}

// scanLogEvents reads the rows of readLog and closes them. As scanEvents does for the
// events table, it reads every row: a value that a writer in another language put
// where the contract does not allow (docs/any-language.md) leaves its field zero and
// is named in the event's Unusable, for the relay to give the event up with, rather
// than failing the read, which would stop the cursor at the row for good.
func scanLogEvents(rows *sql.Rows) ([]outbox.Event, error) {
	defer rows.Close()
	var (
		events []outbox.Event
		// One set of destinations for every row, so that a row costs no allocation of
		// its own for them.
		e                            outbox.Event
		key, metadata, payload       sql.NullString
		maxAttempts, priority, isNew anyValue
		created                      anyValue
		dest                         = []any{&e.Seq, &e.ID, &e.Type, &e.EntityID, &e.UserID, &key, &maxAttempts,
			&priority, &isNew, &metadata, &payload, &created}
	)
	for rows.Next() {
		e = outbox.Event{}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("log row %d: %w", e.Seq, err)
		}
		var problems column.Problems
		column.CheckRequired(e.Type, e.EntityID, &problems)
		readShared(&e, maxAttempts, priority, isNew, metadata, &problems)
		if payload.Valid {
			e.Payload = json.RawMessage(payload.String)
		}
		e.OrderingKey = key.String
		// What AppendTx's caller held: a pending event, due when it was written.
		e.Status = outbox.StatusPending
		e.CreatedAt = created.time("created_at", &problems)
		e.UpdatedAt, e.NextAttemptAt = e.CreatedAt, e.CreatedAt
		e.Unusable = problems.String()
		events = append(events, e)
	}
	return events, rows.Err()
}

// logPastCursor is the condition on the log's rows that a cursor has not passed: after
// its stored position, or after 0 for a name with no cursor, where a new one would
// begin. It is a range of the rowid.
const logPastCursor = `seq > coalesce((SELECT after_seq FROM outbox_log_cursors WHERE name = ?), 0)`

// logWaiting counts the events past a cursor's stored position and finds the oldest
// one's created_at.
const logWaiting = `
SELECT count(*), min(created_at) FROM outbox_log WHERE ` + logPastCursor

// logPeek lists the first events past a cursor's stored position, in the order it
// reads them (readLog), in one statement, so from one committed snapshot.
const logPeek = `
SELECT ` + logEventColumns + `
FROM outbox_log WHERE ` + logPastCursor + ` ORDER BY seq LIMIT ?`

// Waiting counts the committed events the cursor has not passed, by its stored
// position (moved by any reader of its name), and returns when the oldest of them was
// created (zero when none wait). It visits each of them, so it costs what a read of
// all of them would, without their columns: a gauge's refresh, not a loop's.
func (c *LogCursor) Waiting(ctx context.Context) (events int64, oldest time.Time, err error) {
	return c.log.Waiting(ctx, c.name)
}

// Waiting counts the committed events that the cursor of the given name has not
// passed and returns when the oldest of them was created (zero when none wait): what
// waits on the log for the relays of that cursor (LogRelay.Waiting), for a gauge or a
// dashboard beside the events table's counts. Unlike Cursor, it creates no cursor. For
// a name with none (no relay of that cursor has run yet) it counts what a relay
// starting on it would read: every event the log holds, so that events appended before
// any relay ran are not hidden.
func (l *Log) Waiting(ctx context.Context, cursor string) (events int64, oldest time.Time, err error) {
	var at sql.NullInt64
	if err := l.db.QueryRowContext(ctx, logWaiting, cursor).Scan(&events, &at); err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox/sqlite: log cursor %q: count what waits: %w", cursor, err)
	}
	if at.Valid {
		oldest = time.UnixMicro(at.Int64).UTC()
	}
	return events, oldest, nil
}

// Peek lists up to limit (> 0) of the committed events that the cursor of the given
// name has not passed, in the order its relay reads them (commit order): what Waiting
// counts, for an operator to see which events wait. It reads the stored position and
// writes nothing: unlike Cursor, it creates no cursor (one made and never read would
// hold Trim back for good), and it acknowledges nothing. For a name with no cursor it
// lists what a relay starting on it would read first: the oldest events the log holds.
// A listing is a moment's: a relay of the cursor may deliver the events meanwhile.
func (l *Log) Peek(ctx context.Context, cursor string, limit int) ([]outbox.Event, error) {
	if cursor == "" {
		return nil, fmt.Errorf("%w: log peek: cursor name must not be empty", outbox.ErrInvalid)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("%w: log peek: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	rows, err := l.db.QueryContext(ctx, logPeek, cursor, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: peek log cursor %q: %w", cursor, err)
	}
	events, err := scanLogEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: peek log cursor %q: %w", cursor, err)
	}
	return events, nil
}
