package postgres

// The log layout's foundation (issue 24): an append-only event log and a cursor that
// reads it by transaction snapshots (log_cursor.go). It stands apart from Store: its
// own table, its own migrations (logmigrations/) and its own Migrate function, so that
// nothing in the table layout changes until the log layout is built on it. See
// docs/log-layout.md.

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/hub"
	"github.com/fitiq/outbox/internal/migrate"
)

//go:embed logmigrations/*.sql
var logMigrationFiles embed.FS

// logMigrations are the log's own migrations, a sequence apart from the table
// layout's, with their own bookkeeping table.
var logMigrations, logMigrationTemplates = func() ([]migrate.Migration, map[int]*template.Template) {
	ms, err := migrate.Load(logMigrationFiles, "logmigrations")
	if err != nil {
		panic(err) // the embedded files are part of the build; a bad name is a bug caught by every test
	}
	ts := make(map[int]*template.Template, len(ms))
	for _, m := range ms {
		ts[m.Version] = template.Must(template.New(m.Name).Option("missingkey=error").Parse(m.SQL))
	}
	return ms, ts
}()

// LogSchemaVersion is the log schema version this package reads and writes.
var LogSchemaVersion = len(logMigrations)

// LogConfig tells MigrateLog and NewLog where the event log lives. Zero fields take
// their defaults.
type LogConfig struct {
	// Schema holds the log. MigrateLog creates it when it does not exist. Defaults to
	// DefaultSchema.
	Schema string
	// Table names the log table; its cursors table ("<Table>_cursors"), its primary
	// key and its migrations bookkeeping table ("<Table>_schema_migrations") are named
	// after it. Defaults to "outbox_log".
	Table string
	// MaxPayloadBytes is the largest payload AppendTx accepts. Defaults to
	// outbox.DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// OnEnqueue, when set, runs on every event AppendTx writes: see outbox.EnqueueHook.
	OnEnqueue outbox.EnqueueHook
	// Partitions is the number of partitions in the log's ring (log_retention.go), at
	// least 2 and at most 64. MigrateLog uses it when it makes the ring; a log keeps the
	// ring it was made with. Defaults to DefaultLogPartitions.
	Partitions int
	// PartitionXIDs is how many consecutive transaction IDs share a partition of the
	// ring: Retain empties a partition once every cursor has passed its newest, so the
	// log keeps up to about this many transactions' events beyond what its cursors
	// still need. MigrateLog uses it when it makes the ring. Defaults to
	// DefaultLogPartitionXIDs.
	PartitionXIDs int64
	// MaintenanceLockTimeout bounds how long Retain waits for a partition's lock: the
	// log's readers queue behind that request as long (appenders do not). A partition
	// not locked in time is left for the next call. Defaults to
	// DefaultLogMaintenanceLockTimeout.
	MaintenanceLockTimeout time.Duration
	// Shards is how many shards the log's events are spread over, by ordering key (or
	// entity when there is none), from 1 to 256: relays share the shards, one relay at
	// a time per shard (log_shard.go). MigrateLog uses it when it makes the log, and a
	// log keeps the shards it was made with: NewLog refuses a config that says
	// otherwise, so that every appender puts a key in the shard its relays read.
	// Defaults to DefaultLogShards.
	Shards int
}

const defaultLogTable = "outbox_log"

func (c LogConfig) withDefaults() LogConfig {
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.Table = cmp.Or(c.Table, defaultLogTable)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, outbox.DefaultMaxPayloadBytes)
	c.Partitions = cmp.Or(c.Partitions, DefaultLogPartitions)
	c.PartitionXIDs = cmp.Or(c.PartitionXIDs, DefaultLogPartitionXIDs)
	c.MaintenanceLockTimeout = cmp.Or(c.MaintenanceLockTimeout, DefaultLogMaintenanceLockTimeout)
	c.Shards = cmp.Or(c.Shards, DefaultLogShards)
	return c
}

func (c LogConfig) validate() error {
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"Schema", c.Schema, maxIdentifier},
		{"Table", c.Table, maxTable},
	} {
		if !identifier.MatchString(f.value) {
			return logConfigError(f.name, fmt.Sprintf("must be a plain SQL identifier (letters, digits and underscores, not starting with a digit), got %q", f.value))
		}
		if len(f.value) > f.max {
			return logConfigError(f.name, fmt.Sprintf("is %d bytes, over the limit of %d", len(f.value), f.max))
		}
	}
	if c.MaxPayloadBytes < 0 {
		return logConfigError("MaxPayloadBytes", fmt.Sprintf("must not be negative, got %d", c.MaxPayloadBytes))
	}
	if err := c.validateShards(); err != nil {
		return err
	}
	return c.validateRing()
}

// Validate reports the first field of c that cannot work, naming it, with the
// defaults applied to zero fields; MigrateLog and NewLog call it.
func (c LogConfig) Validate() error { return c.withDefaults().validate() }

func logConfigError(field, problem string) error {
	return &outbox.FieldError{Field: "postgres.LogConfig." + field, Problem: problem}
}

// logNames are the quoted identifiers the log's SQL is written with.
type logNames struct {
	Table      string // "schema"."outbox_log"
	Cursors    string // "schema"."outbox_log_cursors"
	Schema     string // "schema"
	Migrations string // "schema"."outbox_log_schema_migrations"
	Delivered  string // "schema"."outbox_log_delivered": the relays' counts (log_delivered.go)
	table      string // unquoted, for constraint names
	schema     string // unquoted

	// The ring a migration makes (log_retention.go).
	Partitions    int
	PartitionXIDs int64
	// The shards a migration makes (log_shard.go).
	Shards int
}

func newLogNames(c LogConfig) logNames {
	return logNames{
		Table:         pgx.Identifier{c.Schema, c.Table}.Sanitize(),
		Cursors:       pgx.Identifier{c.Schema, c.Table + "_cursors"}.Sanitize(),
		Schema:        pgx.Identifier{c.Schema}.Sanitize(),
		Migrations:    pgx.Identifier{c.Schema, c.Table + "_schema_migrations"}.Sanitize(),
		Delivered:     pgx.Identifier{c.Schema, c.Table + "_delivered"}.Sanitize(),
		table:         c.Table,
		schema:        c.Schema,
		Partitions:    c.Partitions,
		PartitionXIDs: c.PartitionXIDs,
		Shards:        c.Shards,
	}
}

// Name returns the quoted name "<table>_<suffix>" of one of the log's constraints;
// migrations call it.
func (n logNames) Name(suffix string) string {
	return pgx.Identifier{n.table + "_" + suffix}.Sanitize()
}

// render fills the table names into one of the log's statements.
func (n logNames) render(sql string) string {
	return strings.NewReplacer("{{log}}", n.Table, "{{cursors}}", n.Cursors, "{{delivered}}", n.Delivered,
		"{{shards}}", n.Schema+"."+n.Name("shards")).Replace(sql)
}

// MigrateLog brings the event log named by cfg to LogSchemaVersion, creating the
// schema if needed, and returns the versions it applied. Its migrations only create
// the log's own tables: the table layout's outbox is not touched. Like Migrate, it is
// safe on an up-to-date database and by several processes at once.
func MigrateLog(ctx context.Context, pool *pgxpool.Pool, cfg LogConfig) ([]int, error) {
	if pool == nil {
		return nil, logConfigError("pool", "must not be nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := newLogNames(cfg)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: migrate log: %w", err)
	}
	defer conn.Release()
	// A session lock, held across the per-migration transactions; the server drops it
	// with the session if this process dies half-way.
	lockKey := "outbox migrate " + n.Table
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, lockKey); err != nil {
		return nil, fmt.Errorf("outbox/postgres: migrate log: take advisory lock: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lockKey); err != nil {
			conn.Conn().Close(context.Background())
		}
	}()
	done, err := migrate.Run(ctx, logTarget{conn: conn.Conn(), schema: cfg.Schema, names: n}, logMigrations)
	versions := make([]int, len(done))
	for i, m := range done {
		versions[i] = m.Version
	}
	if err != nil {
		return versions, fmt.Errorf("outbox/postgres: log: %w", err)
	}
	return versions, nil
}

type logTarget struct {
	conn   *pgx.Conn
	schema string
	names  logNames
}

func (t logTarget) Applied(ctx context.Context) (map[int]bool, error) {
	// Asked first, as Migrate does: CREATE SCHEMA IF NOT EXISTS needs CREATE on the
	// database even when the schema exists.
	var exists bool
	if err := t.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, t.schema).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		if _, err := t.conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+t.names.Schema); err != nil {
			return nil, fmt.Errorf("create schema %s: %w", t.names.Schema, err)
		}
	}
	if _, err := t.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.names.Migrations+` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return nil, err
	}
	return appliedVersions(ctx, t.conn, names{Migrations: t.names.Migrations})
}

func (t logTarget) Apply(ctx context.Context, m migrate.Migration) error {
	var sql bytes.Buffer
	if err := logMigrationTemplates[m.Version].Execute(&sql, t.names); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, t.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+t.names.Migrations+` (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		return err
	})
}

// Log is an append-only event log on PostgreSQL: AppendTx writes events in the
// caller's transaction, and LogCursors read them back in commit order of snapshots.
type Log struct {
	pool *pgxpool.Pool
	cfg  LogConfig
	n    logNames

	appendOne, appendMany, readLog, loadCursor, createCursor, ackCursor string

	// The append hint (log_appendhint.go): when this process last appended outside
	// Transact, and the relays waiting to hear of it.
	appendedAt atomic.Int64
	appends    hub.Hub

	// Retain's lock requests (truncatePartition): a test's bound on asking without
	// queueing (ns; 0: logRetainNoWaitFor), and how many it made.
	retainNoWait    atomic.Int64
	retainLockTries atomic.Int64
}

// NewLog returns the log cfg names, which must have been migrated by MigrateLog:
// otherwise it fails with ErrNotMigrated. The pool stays the caller's.
func NewLog(ctx context.Context, pool *pgxpool.Pool, cfg LogConfig) (*Log, error) {
	if pool == nil {
		return nil, logConfigError("pool", "must not be nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := newLogNames(cfg)
	var found *string
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1)::text`, n.Migrations).Scan(&found); err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log schema version: %w", err)
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s does not exist; run postgres.MigrateLog first", ErrNotMigrated, n.Migrations)
	}
	applied, err := appliedVersions(ctx, pool, names{Migrations: n.Migrations})
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: read log schema version: %w", err)
	}
	for v := range applied {
		if v > LogSchemaVersion {
			return nil, fmt.Errorf("outbox/postgres: %s is at version %d, newer than this program knows (%d)", n.Table, v, LogSchemaVersion)
		}
	}
	if len(applied) < LogSchemaVersion {
		return nil, fmt.Errorf("%w: %s is at version %d of %d; run postgres.MigrateLog", ErrNotMigrated, n.Table, len(applied), LogSchemaVersion)
	}
	l := &Log{
		pool: pool, cfg: cfg, n: n,
		appendOne:    n.render(appendOne),
		appendMany:   n.render(appendMany),
		readLog:      n.render(readLog),
		loadCursor:   n.render(loadCursor),
		createCursor: n.render(createCursor),
		ackCursor:    n.render(ackCursor),
	}
	if err := l.checkShards(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Config returns the log's configuration, defaults filled in.
func (l *Log) Config() LogConfig { return l.cfg }

// appendOne writes one event: a bare INSERT with positional parameters, which
// PostgreSQL runs without materializing arrays and pgx binds without rewriting. xid
// and seq are the columns' defaults, so the row carries the transaction it was
// written in. Parameters: created_at, id, type, entity_id, user_id, ordering_key,
// max_attempts, priority, is_new_record, metadata, payload, shard.
const appendOne = `
INSERT INTO {{log}} (created_at, id, type, entity_id, user_id, ordering_key,
    max_attempts, priority, is_new_record, metadata, payload, shard)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::json, $11::text::json, $12)`

// appendMany writes a batch in one statement, one array per column, in the order
// given: seq follows the order of the batch (ORDER BY n), so the events of a
// transaction are read back as they were appended.
const appendMany = `
INSERT INTO {{log}} (created_at, id, type, entity_id, user_id, ordering_key,
    max_attempts, priority, is_new_record, metadata, payload, shard)
SELECT $1, e.id, e.type, e.entity_id, e.user_id, e.ordering_key,
    e.max_attempts, e.priority, e.is_new_record, e.metadata::json, e.payload::json, e.shard
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::integer[], $8::integer[], $9::boolean[], $10::text[], $11::text[], $12::smallint[])
    WITH ORDINALITY AS e(id, type, entity_id, user_id, ordering_key,
        max_attempts, priority, is_new_record, metadata, payload, shard, n)
ORDER BY e.n`

// AppendTx writes events to the log in the caller's transaction and never commits
// it: roll the transaction back and the events are gone with the data. Every event is
// validated first, and nothing is written when any is invalid; a batch is one INSERT,
// and no NOTIFY is sent (readers find events by polling or by a wake-up sent outside
// the writer's transaction). It fills ID, Status and the times of each event, not
// Seq: the server numbers the rows, and asking for the numbers back (RETURNING) would
// cost every append a few percent of a two-row transaction. Seq is in the events a
// LogCursor reads.
//
// Each event goes to the shard of its ordering key, or of its entity when it has none
// (ShardOf). The events of one transaction are read back together, shard by shard, in
// the order appended, once the transaction commits (see LogCursor). Unlike the table layout, a caller-supplied
// ID that is already in the log is not refused: the log keeps no index on it.
func (l *Log) AppendTx(ctx context.Context, tx pgx.Tx, events ...*outbox.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: AppendTx: tx must not be nil", outbox.ErrInvalid)
	}
	now := time.Now()
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("%w: event %d is nil", outbox.ErrInvalid, i)
		}
		err := e.Prepare(now, l.cfg.MaxPayloadBytes)
		if err == nil {
			err = checkText(e)
		}
		if err != nil {
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
	metadata := make([]*string, len(events))
	for i, e := range events {
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return fmt.Errorf("outbox/postgres: log append: encode metadata: %w", err)
			}
			m := string(b)
			metadata[i] = &m
		}
	}
	created := ts(events[0].CreatedAt)
	if len(events) == 1 {
		e := events[0]
		return l.insert(ctx, tx, l.appendOne, created, pgtype.UUID{Bytes: uuid.MustParse(e.ID), Valid: true},
			e.Type, e.EntityID, e.UserID, nullString(e.OrderingKey), e.MaxAttempts, e.Priority, e.IsNewRecord,
			metadata[0], nullString(string(e.Payload)), l.eventShard(e))
	}
	n := len(events)
	ids := make([]pgtype.UUID, n)
	types, entities, users := make([]string, n), make([]string, n), make([]string, n)
	maxAttempts, priorities := make([]int32, n), make([]int32, n)
	isNew := make([]bool, n)
	keys, payloads := make([]*string, n), make([]*string, n)
	shards := make([]int16, n)
	index := make(map[[16]byte]int, n)
	for i, e := range events {
		ids[i] = pgtype.UUID{Bytes: uuid.MustParse(e.ID), Valid: true}
		if _, dup := index[ids[i].Bytes]; dup {
			// A batch's events are told apart by ID, as in the table layout's batches.
			return fmt.Errorf("event %d: %w", i, &outbox.FieldError{Field: "ID", Problem: "is used by another event of the batch"})
		}
		index[ids[i].Bytes] = i
		types[i], entities[i], users[i] = e.Type, e.EntityID, e.UserID
		maxAttempts[i], priorities[i] = int32(e.MaxAttempts), int32(e.Priority)
		isNew[i] = e.IsNewRecord
		keys[i], payloads[i] = nullString(e.OrderingKey), nullString(string(e.Payload))
		shards[i] = l.eventShard(e)
	}
	return l.insert(ctx, tx, l.appendMany, created, ids, types, entities, users, keys,
		maxAttempts, priorities, isNew, metadata, payloads, shards)
}

// insert runs an append's INSERT in tx, or, in a transaction of Transact, leaves it
// to be sent with the transaction's next statement or its COMMIT (log_transact.go).
func (l *Log) insert(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	if t, ok := l.held(tx); ok {
		return t.hold(sql, args)
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return logAppendError(err)
	}
	l.appended(tx)
	return nil
}

func logAppendError(err error) error {
	if code, _ := pgCode(err); code == codeCharacterNotInRepertoire || code == codeUntranslatableCharacter {
		return fmt.Errorf("outbox/postgres: log append: %w: %w", outbox.ErrInvalid, err)
	}
	return fmt.Errorf("outbox/postgres: log append: %w", err)
}

// ErrLogCursorMoved is returned by LogCursor.Ack when the cursor's stored position is
// no longer the one its batch was read from: another reader of the same cursor name
// acknowledged first. The batch's events may be delivered twice (at least once, as
// ever); the cursor has reloaded its position, and its next Read goes on from there.
var ErrLogCursorMoved = errors.New("outbox/postgres: log cursor moved: another reader acknowledged first")
