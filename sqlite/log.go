package sqlite

// The log layout's foundation on SQLite (issue 24): an append-only event log read by
// a cursor over its rowid (log_cursor.go). It stands apart from Store: its own tables,
// its own migrations (logmigrations/) and its own Migrate function, so that nothing in
// the table layout changes until the log layout is built on it. See
// docs/log-layout.md.
//
// Why rowid order is commit order. SQLite lets one connection write at a time: a
// write transaction holds the database's write lock (WAL mode's WRITER lock, shared
// by every connection and process on the file) from its first write, or from BEGIN
// IMMEDIATE as Open's connections begin, until it commits or rolls back. A rowid is
// assigned when a row is inserted, so while the inserting transaction holds that lock,
// on the newest committed state of the table (a deferred transaction whose snapshot is
// older cannot take the lock: it fails with SQLITE_BUSY_SNAPSHOT). Without
// AUTOINCREMENT the new rowid is one more than the largest in the table. So if T1
// commits before T2, T2 inserted after T1 committed, saw T1's rows, and every rowid
// of T2 is larger than every rowid of T1: reading by rowid is reading in commit order,
// and a reader that has read up to rowid P, from a committed snapshot, has read every
// row that will ever commit with a rowid <= P. A rolled-back transaction's rowids are
// given again to the next writer; no reader saw them, so that is harmless.
//
// The one way to break it: delete the row with the largest rowid. Then the next
// insert reuses a rowid at or below a cursor's position, and the cursor skips it.
// AUTOINCREMENT would prevent that (rowids never reused, kept in sqlite_sequence), at
// the price of writing sqlite_sequence in every appending transaction, one more page
// per commit (BenchmarkLogEnqueue measures it). The log does without, and never deletes
// its largest row instead: Trim deletes only rows below every cursor's position, so
// the row at the lowest position, and every row above it, stays. A reader that finds
// the log's largest rowid below its position (someone deleted rows by hand) fails
// with ErrLogRewound rather than skip.

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/hub"
	"github.com/fitiq/outbox/internal/migrate"
	"github.com/fitiq/outbox/internal/sqltx"
)

//go:embed logmigrations/*.sql
var logMigrationFiles embed.FS

// logMigrations are the log's own migrations, a sequence apart from the table
// layout's, with their own bookkeeping table.
var logMigrations = func() []migrate.Migration {
	ms, err := migrate.Load(logMigrationFiles, "logmigrations")
	if err != nil {
		panic(err) // the embedded files are part of the build; a bad name is a bug caught by every test
	}
	return ms
}()

// LogSchemaVersion is the log schema version this package reads and writes.
var LogSchemaVersion = len(logMigrations)

// logTarget records the log's schema versions beside its tables.
func logTarget(db *sql.DB) migrate.SQLTarget {
	return migrate.SQLTarget{DB: db, Table: "outbox_log_schema_migrations"}
}

// MigrateLog brings db's event log (the tables outbox_log and outbox_log_cursors) to
// LogSchemaVersion and returns the versions it applied. Its migrations only create the
// log's own tables: the table layout's outbox is not touched. It is safe to run on an
// up-to-date database.
func MigrateLog(ctx context.Context, db *sql.DB) ([]int, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: sqlite.MigrateLog: db must not be nil", outbox.ErrInvalid)
	}
	done, err := migrate.Run(ctx, logTarget(db), logMigrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("outbox/sqlite: log: %w", err)
	}
	return versions, nil
}

// LogConfig tunes a Log.
type LogConfig struct {
	// MaxPayloadBytes is the largest payload AppendTx accepts. Defaults to
	// outbox.DefaultMaxPayloadBytes (1 MiB).
	MaxPayloadBytes int
	// OnEnqueue, when set, runs on every event AppendTx writes: see outbox.EnqueueHook.
	OnEnqueue outbox.EnqueueHook
}

// Log is an append-only event log on SQLite: AppendTx writes events in the caller's
// transaction, LogCursors read them back in commit order, LogRelays deliver them, and
// Trim deletes what every cursor has passed. It is the layout a new outbox gets
// (docs/log-layout.md).
type Log struct {
	db  *sql.DB
	cfg LogConfig

	insert, read, ack, head *sql.Stmt // prepared once: parsing costs more than running them

	wake hub.Hub       // this process's relays, woken after a commit that appended
	own  sqltx.Tracker // transactions run by Transact that appended
}

// NewLog returns the log of db, which must have been migrated by MigrateLog:
// otherwise it fails with ErrNotMigrated. db should be opened with Open, or with the
// settings it applies (WAL, a busy timeout, immediate write transactions), and stays
// the caller's.
func NewLog(ctx context.Context, db *sql.DB, cfg LogConfig) (*Log, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: sqlite.NewLog: db must not be nil", outbox.ErrInvalid)
	}
	if cfg.MaxPayloadBytes < 0 {
		return nil, &outbox.FieldError{Field: "sqlite.LogConfig.MaxPayloadBytes", Problem: fmt.Sprintf("must not be negative, got %d", cfg.MaxPayloadBytes)}
	}
	cfg.MaxPayloadBytes = cmp.Or(cfg.MaxPayloadBytes, outbox.DefaultMaxPayloadBytes)
	if err := checkLogSchema(ctx, db); err != nil {
		return nil, err
	}
	l := &Log{db: db, cfg: cfg}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{{&l.insert, appendLog}, {&l.read, readLog}, {&l.ack, ackLogCursor}, {&l.head, logHead}} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("outbox/sqlite: log: prepare: %w", err)
		}
		*p.stmt = stmt
	}
	return l, nil
}

// Close releases the log's prepared statements; the database stays open.
func (l *Log) Close() error {
	var errs []error
	for _, s := range []*sql.Stmt{l.insert, l.read, l.ack, l.head} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

func checkLogSchema(ctx context.Context, db *sql.DB) error {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox_log_schema_migrations'`).Scan(&n); err != nil {
		return fmt.Errorf("outbox/sqlite: read log schema version: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: the log is not created; run sqlite.MigrateLog first", ErrNotMigrated)
	}
	applied, err := migrate.AppliedVersions(ctx, db, "outbox_log_schema_migrations")
	if err != nil {
		return fmt.Errorf("outbox/sqlite: read log schema version: %w", err)
	}
	for v := range applied {
		if v > LogSchemaVersion {
			return fmt.Errorf("outbox/sqlite: the log is at version %d, newer than this program knows (%d)", v, LogSchemaVersion)
		}
	}
	if len(applied) < LogSchemaVersion {
		return fmt.Errorf("%w: the log is at version %d of %d; run sqlite.MigrateLog", ErrNotMigrated, len(applied), LogSchemaVersion)
	}
	return nil
}

// appendLog writes one event; seq is the rowid, read back with LastInsertId.
const appendLog = `
INSERT INTO outbox_log (id, type, entity_id, user_id, ordering_key, max_attempts, priority,
    is_new_record, metadata, payload, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// AppendTx writes events to the log in the caller's transaction and never commits
// it: roll the transaction back and the events are gone with the data. Every event is
// validated first, as EnqueueTx does, and nothing is written when any is invalid; then
// each is one INSERT. It fills ID, Seq (the rowid), Status and the times of each
// event.
//
// Cursors read the events in commit order, and the events of one transaction in the
// order appended (see the comment at the top of log.go). Unlike EnqueueTx, a
// caller-supplied ID already in the log is not refused (the log keeps no index on it).
// Inside Transact, this process's relays wake once the transaction commits; in a
// transaction of the caller's own, call Committed after the commit, or the relays
// find the events by their head poll.
func (l *Log) AppendTx(ctx context.Context, tx *sql.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: AppendTx: tx must not be nil", outbox.ErrInvalid)
	}
	now := time.Now()
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("%w: event %d is nil", outbox.ErrInvalid, i)
		}
		if err := e.Prepare(now, l.cfg.MaxPayloadBytes); err != nil {
			if len(events) > 1 {
				return fmt.Errorf("event %d: %w", i, err)
			}
			return err
		}
		l.cfg.OnEnqueue.Run(ctx, e)
	}
	if len(events) == 0 {
		return nil
	}
	l.own.Add(tx, nil) // when Transact runs tx, wake the relays after its commit
	insert := tx.StmtContext(ctx, l.insert)
	defer insert.Close()
	for _, e := range events {
		var metadata any
		if len(e.Metadata) > 0 {
			metadata = encodeLogMetadata(e.Metadata)
		}
		// Values of the driver's own types (int64, not int), which database/sql passes
		// on without converting them by reflection.
		args := []any{e.ID, e.Type, e.EntityID, e.UserID, column.NullString(e.OrderingKey),
			int64(e.MaxAttempts), int64(e.Priority), e.IsNewRecord, metadata,
			column.NullString(string(e.Payload)), column.Micros(e.CreatedAt)}
		res, err := insert.ExecContext(ctx, args...)
		if err != nil && strings.Contains(err.Error(), "statement from different database") {
			// tx belongs to another *sql.DB on the same file: database/sql refused the
			// statement before running it, so run the query text instead.
			res, err = tx.ExecContext(ctx, appendLog, args...)
		}
		if err != nil {
			return fmt.Errorf("outbox/sqlite: log append %s: %w", e.ID, err)
		}
		if e.Seq, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("outbox/sqlite: log append %s: %w", e.ID, err)
		}
	}
	return nil
}

// logHead is the relays' head poll: the log's largest rowid, from the last page of its
// primary key. Events past a cursor's position exist when it is above the position.
const logHead = `SELECT coalesce(max(seq), 0) FROM outbox_log`

// Transact runs fn in a transaction of the log's database and commits it when fn
// returns nil; it rolls back when fn returns an error or panics. Write your data and
// AppendTx its events inside fn, and both land or neither does. After a commit in
// which fn appended, this process's LogRelays wake at once.
func (l *Log) Transact(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return l.own.Transact(ctx, l.db, "outbox/sqlite: log", fn, func(map[string]struct{}) { l.Committed() })
}

// Committed wakes this process's LogRelays of this log: call it after committing a
// transaction of your own in which AppendTx wrote. It is a hint: a relay woken with
// nothing new reads nothing and waits again.
func (l *Log) Committed() { l.wake.Wake(nil, true) }

// trimLog deletes the oldest events every cursor has passed, at most :limit of them:
// the rows below the lowest cursor position (none when there is no cursor), and below
// the log's first rowid + :limit. Both bounds are scalar subqueries SQLite evaluates
// once, so the delete is a range of the primary key (rowid < bound): it visits the rows
// it deletes and no others. Strictly below: the row at the lowest position stays, and
// with it the log's largest rowid (see the comment at the top of log.go).
const trimLog = `
DELETE FROM outbox_log
WHERE seq < min(
    (SELECT coalesce(min(after_seq), 0) FROM outbox_log_cursors),
    (SELECT coalesce(min(seq), 0) FROM outbox_log) + :limit)`

// Trim deletes up to limit of the oldest events that every cursor has passed, in one
// short write transaction, and returns how many it deleted; call it until it returns
// fewer than limit to trim all. With no cursor it deletes nothing, and a cursor that
// never moves holds every event from its position on (as a replication slot does).
//
// It is a range delete on the primary key: its cost is the rows it deletes, not the
// table's size. The pages they free go to SQLite's freelist and are reused by later
// appends, so under a constant stream the file stays the size of the largest backlog
// it has held (docs/log-layout.md has the measurement).
//
// In the same transaction it deletes the relays' counts of deliveries older than
// LogDeliveredRetention (Log.Delivered), a range of a small table's key.
func (l *Log) Trim(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: log trim: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log trim: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, trimLog, sql.Named("limit", limit))
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log trim: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log trim: %w", err)
	}
	if _, err := tx.ExecContext(ctx, trimLogDelivered, sql.Named("keep", LogDeliveredRetention.Microseconds())); err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log trim: delete old counts of deliveries: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log trim: %w", err)
	}
	return int(n), nil
}

// ErrLogCursorMoved is returned by LogCursor.Ack when the cursor's stored position is
// no longer the one its batch was read from: another reader of the same cursor name
// acknowledged first. The batch's events may be delivered twice (at least once, as
// ever); the cursor has reloaded its position, and its next Read goes on from there.
var ErrLogCursorMoved = errors.New("outbox/sqlite: log cursor moved: another reader acknowledged first")

// ErrLogRewound is returned by LogCursor.Read when the log's largest rowid is below
// the cursor's position: rows were deleted other than by Trim (the largest among them),
// and new events would get rowids the cursor has passed. Delivering on would skip
// them; reset the cursor's position instead, knowing what was deleted.
var ErrLogRewound = errors.New("outbox/sqlite: log rewound: its largest rowid is below a cursor's position")

// ErrLogCursorNotFound is returned by DropCursor for a name no cursor has.
var ErrLogCursorNotFound = errors.New("outbox/sqlite: log cursor not found")

// ErrLogCursorBusy is returned by DropCursor while a LogRelay holds the cursor's lease.
var ErrLogCursorBusy = errors.New("outbox/sqlite: log cursor is in use by a relay")

// dropLogCursor deletes a cursor whose lease is free or has run out.
const dropLogCursor = `
DELETE FROM outbox_log_cursors
WHERE name = :name AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= :now)`

// DropCursor deletes the cursor of the given name, so that it no longer holds Trim
// back: use it for a cursor that no one reads any more (a cursor that never moves keeps
// every event from its position on). It fails with ErrLogCursorNotFound when there is
// no such cursor, and with ErrLogCursorBusy while a LogRelay holds its lease. A
// LogCursor of the name still in use gets ErrLogCursorMoved at its next Ack; Cursor
// (name) afterwards creates a new cursor at 0, whose first read delivers every event
// the log still holds.
func (l *Log) DropCursor(ctx context.Context, name string) error {
	res, err := l.db.ExecContext(ctx, dropLogCursor, sql.Named("name", name), sql.Named("now", time.Now().UnixMicro()))
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return fmt.Errorf("outbox/sqlite: drop log cursor %q: %w", name, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := l.cursorExists(ctx, name)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: drop log cursor %q: %w", name, err)
	}
	if exists {
		return fmt.Errorf("%w: %q", ErrLogCursorBusy, name)
	}
	return fmt.Errorf("%w: %q", ErrLogCursorNotFound, name)
}

// cursorExists tells whether the log has a cursor of the name: what DropCursor and
// CopyCursor ask when their statement changed no row, to say why.
func (l *Log) cursorExists(ctx context.Context, name string) (bool, error) {
	var exists bool
	err := l.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM outbox_log_cursors WHERE name = ?)`, name).Scan(&exists)
	return exists, err
}

// ErrLogCursorExists is returned by CopyCursor when the log already has a cursor of
// the new name.
var ErrLogCursorExists = errors.New("outbox/sqlite: log cursor exists")

// copyLogCursor makes cursor :to at the position of cursor :from, with no lease,
// unless :to exists: one statement, so that no Trim or Ack comes between the read of
// the position and the new row.
const copyLogCursor = `
INSERT INTO outbox_log_cursors (name, after_seq, updated_at)
SELECT :to, after_seq, :now FROM outbox_log_cursors WHERE name = :from
ON CONFLICT (name) DO NOTHING`

// CopyCursor creates the cursor to at the position of the cursor from, so that a
// relay of to starts where from is instead of at the oldest event the log still holds.
// It is how one relay's cursor is split into scopes (LogRelayConfig.Types): stop the
// relay of from, copy its cursor into one cursor per scope, start the scoped relays,
// and drop from (DropCursor), which would otherwise hold Trim back for good. Between
// them the scopes then deliver every event from has not passed, and none that it has.
// It fails with ErrLogCursorExists when to exists, and with ErrLogCursorNotFound when
// from does not (no relay or reader of it has run).
func (l *Log) CopyCursor(ctx context.Context, from, to string) error {
	if from == "" || to == "" || from == to {
		return fmt.Errorf("%w: copy log cursor %q to %q: the names must differ and not be empty", outbox.ErrInvalid, from, to)
	}
	res, err := l.db.ExecContext(ctx, copyLogCursor, sql.Named("from", from), sql.Named("to", to), sql.Named("now", time.Now().UnixMicro()))
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return fmt.Errorf("outbox/sqlite: copy log cursor %q to %q: %w", from, to, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := l.cursorExists(ctx, to)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: copy log cursor %q to %q: %w", from, to, err)
	}
	if exists {
		return fmt.Errorf("outbox/sqlite: copy log cursor %q to %q: %w", from, to, ErrLogCursorExists)
	}
	return fmt.Errorf("outbox/sqlite: copy log cursor %q to %q: %w", from, to, ErrLogCursorNotFound)
}

// encodeLogMetadata writes metadata as a JSON object, keys sorted, as json.Marshal
// would but for escaping only what JSON requires (not <, >, & or U+2028/9: the column
// is read back by a JSON decoder, never put in HTML), and without reflection: it is a
// tenth of what the event costs to append. Prepare has checked that every key and
// value is valid UTF-8 without NUL.
func encodeLogMetadata(metadata map[string]string) string {
	var buf [8]string // on the stack, for the few keys metadata usually has
	keys := buf[:0]
	for k := range metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	size := 2
	for _, k := range keys {
		size += len(k) + len(metadata[k]) + 6
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, k)
		b.WriteByte(':')
		writeJSONString(&b, metadata[k])
	}
	b.WriteByte('}')
	return b.String()
}

// writeJSONString writes s as a JSON string: quoted, with '"', '\\' and control
// characters escaped.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
