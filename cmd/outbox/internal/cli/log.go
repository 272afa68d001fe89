package cli

// The log layout (docs/log-layout.md), the default for a new outbox: an append-only
// event log beside the events table, on PostgreSQL and SQLite. migrate creates it,
// enqueue appends to it, and relay delivers it with a LogRelay while a Processor goes
// on delivering the events table, where the log relay moves the events whose delivery
// failed (and the later events of their keys).

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// The layouts --layout names.
const (
	layoutTable = "table"
	layoutLog   = "log"
)

// layoutUsage describes --layout wherever it is listed.
const layoutUsage = "table (the events table) or log (the event log, with the events table for failures: PostgreSQL and SQLite; see docs/log-layout.md)"

func layoutFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "layout", layoutTable, layoutUsage)
}

// layoutFromStore is --layout left out, for the commands that then take the layout
// from the store (resolveLayout).
const layoutFromStore = ""

// layoutFromStoreFlag is --layout for the commands that read or deliver what the
// store holds (relay, stats, health, serve, enqueue): left out, the store decides.
func layoutFromStoreFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "layout", layoutFromStore, layoutUsage+"; left out, the log when the store has one (outbox migrate made it), the table otherwise")
}

// resolveLayout is the layout a command runs on an opened store: the one --layout
// gave, or, when it was left out, the log when the store has one and the command's
// other flags ask nothing of it that the log cannot answer (logFits), the table
// otherwise. So a relay, stats or health run without --layout on a store with a log
// cannot leave the log's events unseen.
func resolveLayout(ctx context.Context, layout string, d dsn, s *openedStore, timeout time.Duration, logFits bool) (string, error) {
	if layout != layoutFromStore {
		return layout, nil
	}
	if !logFits || d.my != nil {
		return layoutTable, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	has, err := hasLog(ctx, d, s)
	if err != nil {
		return "", timedOut(fmt.Errorf("look for the event log: %w", err), timeout)
	}
	if has {
		return layoutLog, nil
	}
	return layoutTable, nil
}

// hasLog tells whether the store's log has been migrated, at any version: a log of an
// older version is then refused by openLog, naming the migration.
func hasLog(ctx context.Context, d dsn, s *openedStore) (bool, error) {
	return hasMigrations(ctx, s, "outbox_log", d.pgCfg.Schema, d.logConfig(0).Table)
}

// hasOutbox tells whether the store's events table has been migrated, at any version:
// a store without one is new, and migrate makes it on the log layout.
func hasOutbox(ctx context.Context, d dsn, s *openedStore) (bool, error) {
	return hasMigrations(ctx, s, "outbox", d.pgCfg.Schema, cmp.Or(d.pgCfg.Table, postgres.DefaultTable))
}

// hasMigrations tells whether a table's migrations bookkeeping exists: on SQLite
// <liteTable>_schema_migrations, on PostgreSQL <schema>.<pgTable>_schema_migrations.
func hasMigrations(ctx context.Context, s *openedStore, liteTable, schema, pgTable string) (bool, error) {
	var has bool
	if s.db != nil {
		err := s.db.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`, liteTable+"_schema_migrations").Scan(&has)
		return has, err
	}
	migrations := pgx.Identifier{cmp.Or(schema, postgres.DefaultSchema), pgTable + "_schema_migrations"}.Sanitize()
	err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, migrations).Scan(&has)
	return has, err
}

// mysqlKeepsTheTable answers --layout=log on MySQL or MariaDB.
const mysqlKeepsTheTable = "--layout=log: MySQL and MariaDB keep the table layout: InnoDB shows SQL no snapshot " +
	"of running transactions to read an event log by (see docs/log-layout.md#mysql-and-mariadb-why-they-keep-the-table-layout)"

// checkLayout refuses a layout that is not one, and the log where there is none: bad
// input, found before anything is opened.
func checkLayout(layout string, d dsn) error {
	switch layout {
	case layoutTable, layoutFromStore:
		return nil
	case layoutLog:
		if d.my != nil {
			return usagef("%s", mysqlKeepsTheTable)
		}
		if d.pg != nil {
			if err := d.logConfig(0).Validate(); err != nil {
				var fe *outbox.FieldError
				if errors.As(err, &fe) && fe.Field == "postgres.LogConfig.Table" {
					return usagef("DSN %q: the log's table, %s, %s (shorten table=)", redactDSN(d.raw), d.logConfig(0).Table, fe.Problem)
				}
				return usagef("DSN %q: %v", redactDSN(d.raw), err)
			}
		}
		return nil
	}
	return usagef("--layout %q: want table or log%s", layout, didYouMean(layout, "", []string{layoutTable, layoutLog}))
}

// logConfig names a PostgreSQL store's log: in the events table's schema, named
// outbox_log, or <table>_log when the DSN names the events table (table=), so that two
// outboxes of one schema have a log each.
func (d dsn) logConfig(shards int) postgres.LogConfig {
	table := "outbox_log"
	if d.pgCfg.Table != "" {
		table = d.pgCfg.Table + "_log"
	}
	return postgres.LogConfig{Schema: d.pgCfg.Schema, Table: table, Shards: shards}
}

// logName names a PostgreSQL store's log for messages: schema.table.
func (d dsn) logName() string {
	cfg := d.logConfig(0)
	return cmp.Or(cfg.Schema, postgres.DefaultSchema) + "." + cfg.Table
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// storedShards reads how many shards a PostgreSQL log was made with; ok is false when
// there is no log made with shards (none at all, or one older than its shards
// migration, which MigrateLog shards by the count it is given).
func storedShards(ctx context.Context, pool *pgxpool.Pool, cfg postgres.LogConfig) (n int, ok bool, err error) {
	fn := pgx.Identifier{cmp.Or(cfg.Schema, postgres.DefaultSchema), cfg.Table + "_shards"}.Sanitize()
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regproc($1) IS NOT NULL`, fn).Scan(&exists); err != nil {
		return 0, false, fmt.Errorf("read the log's shards: %w", err)
	}
	if !exists {
		return 0, false, nil
	}
	if err := pool.QueryRow(ctx, `SELECT `+fn+`()`).Scan(&n); err != nil {
		return 0, false, fmt.Errorf("read the log's shards: %w", err)
	}
	return n, true, nil
}

// logMigration is migrate --layout=log's plan, checked before anything is applied.
type logMigration struct {
	d      dsn
	s      *openedStore
	shards int // PostgreSQL: the log's shards
}

// planLogMigration checks --shards against the store: SQLite's log has no shards, and
// a PostgreSQL log keeps the shards it was made with. Without --shards, a new log gets
// one and an existing log keeps its own.
func planLogMigration(ctx context.Context, d dsn, s *openedStore, shards int, shardsGiven bool, timeout time.Duration) (*logMigration, error) {
	m := &logMigration{d: d, s: s}
	if s.pool == nil {
		if shardsGiven {
			return nil, usagef("--shards: a SQLite log has no shards (one relay delivers it); leave --shards out")
		}
		return m, nil
	}
	stored, exists, err := storedShards(ctx, s.pool, d.logConfig(0))
	if err != nil {
		return nil, timedOut(err, timeout)
	}
	switch {
	case exists && shardsGiven && stored != shards:
		return nil, usagef("--shards %d: the log %s was made with %s, and a log keeps the shards it was made with "+
			"(leave --shards out, or give --shards %d)", shards, d.logName(), plural(stored, "shard"), stored)
	case exists:
		m.shards = stored
	case shardsGiven:
		m.shards = shards
	default:
		m.shards = postgres.DefaultLogShards
	}
	return m, nil
}

// apply runs the log's migrations and says what it did, one line. On PostgreSQL it
// then opens the log as relays will, so that a log that refuses the shards is said
// here, in the library's words.
func (m *logMigration) apply(ctx context.Context, env *Env) error {
	var (
		applied []int
		err     error
		name    = "the log"
	)
	if m.s.pool != nil {
		cfg := m.d.logConfig(m.shards)
		name = fmt.Sprintf("the log %s (%s)", m.d.logName(), plural(m.shards, "shard"))
		applied, err = postgres.MigrateLog(ctx, m.s.pool, cfg)
		if err == nil {
			_, err = postgres.NewLog(ctx, m.s.pool, cfg)
			var fe *outbox.FieldError
			if errors.As(err, &fe) && fe.Field == "postgres.LogConfig.Shards" {
				return fmt.Errorf("--shards %s", fe.Problem)
			}
		}
	} else {
		applied, err = sqlite.MigrateLog(ctx, m.s.db)
	}
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(env.Stdout, "%s: %s is up to date\n", m.d.describe(), name)
		return nil
	}
	vs := make([]string, len(applied))
	for i, v := range applied {
		vs[i] = strconv.Itoa(v)
	}
	fmt.Fprintf(env.Stdout, "%s: %s: applied migration %s\n", m.d.describe(), name, strings.Join(vs, ", "))
	return nil
}

// eventLog is the log of an opened store.
type eventLog struct {
	pg   *postgres.Log
	lite *sqlite.Log
	// The store's connections, for what the log's API does not answer (waiting).
	pool *pgxpool.Pool
	db   *sql.DB
}

// openLog opens the store's log, refusing one that is not migrated with what to run.
func openLog(ctx context.Context, d dsn, s *openedStore, timeout time.Duration) (*eventLog, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.db != nil {
		l, err := sqlite.NewLog(ctx, s.db, sqlite.LogConfig{})
		if err != nil {
			if errors.Is(err, sqlite.ErrNotMigrated) {
				return nil, d.logNotMigrated(err, sqlite.ErrNotMigrated)
			}
			return nil, timedOut(err, timeout)
		}
		return &eventLog{lite: l, db: s.db}, nil
	}
	cfg := d.logConfig(0)
	n, ok, err := storedShards(ctx, s.pool, cfg)
	if err != nil {
		return nil, timedOut(err, timeout)
	}
	if ok {
		cfg.Shards = n
	}
	l, err := postgres.NewLog(ctx, s.pool, cfg)
	if err != nil {
		if errors.Is(err, postgres.ErrNotMigrated) {
			return nil, d.logNotMigrated(err, postgres.ErrNotMigrated)
		}
		return nil, timedOut(err, timeout)
	}
	return &eventLog{pg: l, pool: s.pool}, nil
}

func (l *eventLog) close() {
	if l.lite != nil {
		_ = l.lite.Close()
	}
}

// withStoreAndLog is withStore for the commands that also show what waits on the log:
// with --layout=log it refuses a store without a log (MySQL, bad input: nothing
// opened) and opens the store's log (refused, naming the migration, when there is
// none); without --layout, it opens the log when the store has one and logFits (see
// resolveLayout). l is nil on the table layout.
func withStoreAndLog(ctx context.Context, c *call, layout string, logFits bool, fn func(s outbox.Store, l *eventLog) error) error {
	d, err := parseDSN(c.dsn)
	if err != nil {
		return err
	}
	if err := checkLayout(layout, d); err != nil {
		return err
	}
	s, err := d.open(ctx, false, c.timeout)
	if err != nil {
		return err
	}
	defer s.close()
	if layout, err = resolveLayout(ctx, layout, d, s, c.timeout, logFits); err != nil {
		return err
	}
	var l *eventLog
	if layout == layoutLog {
		if l, err = openLog(ctx, d, s, c.timeout); err != nil {
			return err
		}
		defer l.close()
	}
	return timedOut(fn(outbox.BoundStore(s.Store, c.timeout, slog.New(slog.DiscardHandler)), l), c.timeout)
}

// onLog is what waits on the log, at a moment, for the log relays of the cursors the
// command was given (--log-cursor; the CLI's default cursor when none), and what the
// log's relays delivered in the window before it.
type onLog struct {
	// events sums the cursors' counts (an event counts once for each cursor that has
	// not passed it); oldestAge is the oldest of their oldest (zero when none waits).
	events    int64
	oldestAge time.Duration
	cursors   []cursorOnLog // each cursor's, in the order given
	delivered int64         // by every cursor's relays, within window
	window    time.Duration
}

// delivered is how many events the log's relays delivered from since on (by whole
// minutes: Log.Delivered), which Stats.Recent does not count.
func (l *eventLog) delivered(ctx context.Context, since time.Time) (int64, error) {
	if l.lite != nil {
		return l.lite.Delivered(ctx, since)
	}
	return l.pg.Delivered(ctx, since)
}

// deliveredByMinute is how many events the log's relays delivered in each minute from
// since's up to until (Log.DeliveredByMinute), which the store's Timeline does not count.
func (l *eventLog) deliveredByMinute(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error) {
	if l.lite != nil {
		return l.lite.DeliveredByMinute(ctx, since, until)
	}
	return l.pg.DeliveredByMinute(ctx, since, until)
}

// cursorOnLog is what waits on the log for one cursor's relays.
type cursorOnLog struct {
	name      string
	events    int64
	oldestAge time.Duration
}

// logImplied is the layout a command runs with --layout as given: the log when
// --layout was left out and a flag only the log has (--log-cursor) was given.
func logImplied(layout string, logOnly bool) string {
	if layout == layoutFromStore && logOnly {
		return layoutLog
	}
	return layout
}

// logCursorsFlag registers --log-cursor for the commands that show what waits on the
// log.
func logCursorsFlag(fs *flag.FlagSet, p *listFlag) {
	fs.Var(p, "log-cursor", "with --layout=log, what waits for the log relays of this cursor (repeatable; default "+postgres.DefaultLogRelayCursor+", the relay's default)")
}

// checkLogCursors returns the cursors that --log-cursor names, or the CLI's default
// cursor when it names none, refusing the flag without --layout=log and an empty or
// repeated name.
func checkLogCursors(layout string, names listFlag) ([]string, error) {
	if len(names) == 0 {
		return []string{postgres.DefaultLogRelayCursor}, nil
	}
	if layout == layoutTable {
		return nil, usagef("--log-cursor is for --layout=log: the events table has no cursors")
	}
	for i, n := range names {
		if n == "" {
			return nil, usagef("--log-cursor: a cursor's name must not be empty")
		}
		if slices.Contains(names[:i], n) {
			return nil, usagef("--log-cursor %s is given twice", n)
		}
	}
	return names, nil
}

// waiting is what waits on the log for the relays of one cursor: the committed events
// it has not passed, of every type (a relay scoped to types passes the others by, but
// only once it reads them), and when the oldest was created (zero when none waits).
// Before any log relay has read the log with this cursor, it does not exist yet, and
// Log.Waiting counts what a relay that starts would read: the whole log, so that
// events appended before a log relay ever ran are not hidden.
func (l *eventLog) waiting(ctx context.Context, cursor string) (n int64, oldest time.Time, err error) {
	if l.lite != nil {
		return l.lite.Waiting(ctx, cursor)
	}
	return l.pg.Waiting(ctx, cursor)
}

// peek lists up to limit of the events that wait on the log for the relays of one
// cursor, in the order they read them (Log.Peek), creating no cursor.
func (l *eventLog) peek(ctx context.Context, cursor string, limit int) ([]outbox.Event, error) {
	if l.lite != nil {
		return l.lite.Peek(ctx, cursor, limit)
	}
	events, err := l.pg.Peek(ctx, cursor, limit)
	if err != nil {
		return nil, err
	}
	out := make([]outbox.Event, len(events))
	for i, e := range events {
		out[i] = e.Event
	}
	return out, nil
}

// waitingSum is what waits for the cursors together, for the dashboard's one
// LogWaiting: their counts summed, and the oldest of their oldest.
func (l *eventLog) waitingSum(ctx context.Context, cursors []string) (n int64, oldest time.Time, err error) {
	for _, c := range cursors {
		cn, co, err := l.waiting(ctx, c)
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("log cursor %s: %w", c, err)
		}
		n += cn
		if !co.IsZero() && (oldest.IsZero() || co.Before(oldest)) {
			oldest = co
		}
	}
	return n, oldest, nil
}

// waitingAt is what waits for each cursor, with the oldest ones' ages at now, and
// what the log delivered in the window before now.
func (l *eventLog) waitingAt(ctx context.Context, cursors []string, now time.Time, window time.Duration) (onLog, error) {
	w := onLog{window: window}
	for _, c := range cursors {
		n, oldest, err := l.waiting(ctx, c)
		if err != nil {
			return onLog{}, fmt.Errorf("what waits on the log for cursor %s: %w", c, err)
		}
		cw := cursorOnLog{name: c, events: n}
		if n > 0 && !oldest.IsZero() {
			cw.oldestAge = max(now.Sub(oldest), 0)
		}
		w.cursors = append(w.cursors, cw)
		w.events += n
		w.oldestAge = max(w.oldestAge, cw.oldestAge)
	}
	var err error
	if w.delivered, err = l.delivered(ctx, now.Add(-window)); err != nil {
		return onLog{}, fmt.Errorf("what the log delivered: %w", err)
	}
	return w, nil
}

// copyCursor creates cursor to at cursor from's position (Log.CopyCursor), telling
// whether to existed already or from does not exist by the stores' sentinels.
func (l *eventLog) copyCursor(ctx context.Context, from, to string) (exists, notFound bool, err error) {
	if l.lite != nil {
		err = l.lite.CopyCursor(ctx, from, to)
		return errors.Is(err, sqlite.ErrLogCursorExists), errors.Is(err, sqlite.ErrLogCursorNotFound), err
	}
	err = l.pg.CopyCursor(ctx, from, to)
	return errors.Is(err, postgres.ErrLogCursorExists), errors.Is(err, postgres.ErrLogCursorNotFound), err
}

// logNotMigrated says that the store has no log of this version, and what to run.
func (d dsn) logNotMigrated(err, sentinel error) error {
	return d.unmigrated("the event log", "outbox migrate --layout=log", err, sentinel)
}

// appendInOneTx appends the chunks to the log in one transaction.
func (l *eventLog) appendInOneTx(ctx context.Context, chunks [][]*outbox.Event) error {
	if l.lite != nil {
		return l.lite.Transact(ctx, func(tx *sql.Tx) error {
			return eachChunk(chunks, func(c []*outbox.Event) error { return l.lite.AppendTx(ctx, tx, c...) })
		})
	}
	return l.pg.Transact(ctx, func(tx pgx.Tx) error {
		return eachChunk(chunks, func(c []*outbox.Event) error { return l.pg.AppendTx(ctx, tx, c...) })
	})
}

// logDrained is what a LogRelay's Drain did, on either store.
type logDrained struct {
	read, delivered, failed, waiting, duplicates int
	held                                         bool
	fault                                        error
	busy                                         bool
}

// logRelay is a LogRelay of either store.
type logRelay struct {
	run func(ctx context.Context) error
	// stop makes run return after the step in flight, cancelling it when ctx ends first.
	stop  func(ctx context.Context) error
	drain func(ctx context.Context) (logDrained, error)
	// trim lets go of what every cursor has passed, for --once: Run does so itself
	// (Log.Retain on PostgreSQL, Log.Trim on SQLite), Drain does not.
	trim func(ctx context.Context) error
	// waiting is what waits on the log, for its gauges.
	waiting metrics.LogSource
}

// boundLogSource bounds each look at what waits on the log, as the gauges' reads of
// the events table are bounded (outbox.BoundStore).
type boundLogSource struct {
	src     metrics.LogSource
	timeout time.Duration
}

func (b boundLogSource) Waiting(ctx context.Context) (int64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.src.Waiting(ctx)
}

// newLogRelay makes the relay's LogRelay: the relay's handler, the settings it shares
// with the relay's Processor (retries, breaker, lease, handler timeout, keys that pass
// a given-up event), and observers (metrics, summaries, traces), which count both
// paths. --batch-size and --poll-interval apply when given: their
// defaults are the Processor's, and the log relay's own defaults are larger batches
// (500) and a shorter poll (100ms; head polls find commits within milliseconds).
func newLogRelay(ctx context.Context, l *eventLog, store outbox.Store, handler outbox.Handler, o *relayOpts, c *call,
	proc outbox.Config, observers []outbox.Observer, log *slog.Logger) (*logRelay, error) {
	var batch int
	var poll time.Duration
	if c.set["batch-size"] {
		batch = o.batchSize
	}
	if c.set["poll-interval"] {
		poll = o.pollInterval
	}
	if l.lite != nil {
		s, ok := store.(*sqlite.Store)
		if !ok {
			return nil, fmt.Errorf("the log relay needs the SQLite store, got %T", store)
		}
		r, err := sqlite.NewLogRelay(ctx, l.lite, s, handler, sqlite.LogRelayConfig{
			Cursor: o.logCursor, Types: o.types, Owner: o.owner, BatchSize: batch, MaxConcurrent: o.maxConcurrent, PollInterval: poll,
			LeaseDuration: o.lease, HandlerTimeout: o.handlerTimeout, Retry: proc.Retry, Breaker: proc.Breaker,
			SkipGivenUp: o.skipGivenUp, Clock: proc.Clock, Logger: log, Observers: observers,
		})
		if err != nil {
			return nil, logRelayRefused(err)
		}
		return &logRelay{
			run: r.Run, stop: r.Stop,
			drain: func(ctx context.Context) (logDrained, error) {
				st, err := r.Drain(ctx)
				if rerr := r.Release(context.WithoutCancel(ctx)); err == nil && rerr != nil {
					log.Warn("could not release the log cursor's lease; another relay waits for it to run out", "err", rerr)
				}
				return logDrained{st.Read, st.Delivered, st.Failed, st.Waiting, st.Duplicates, st.Held, st.Fault, st.Busy}, err
			},
			trim: func(ctx context.Context) error {
				n, err := r.Trim(ctx)
				if n > 0 {
					log.Debug("log trimmed", "events_deleted", n)
				}
				return err
			},
			waiting: r,
		}, nil
	}
	s, ok := store.(*postgres.Store)
	if !ok {
		return nil, fmt.Errorf("the log relay needs the PostgreSQL store, got %T", store)
	}
	r, err := postgres.NewLogRelay(ctx, l.pg, s, handler, postgres.LogRelayConfig{
		Cursor: o.logCursor, Types: o.types, Concurrency: o.logConcurrency, BatchSize: batch, MaxConcurrent: o.maxConcurrent, PollInterval: poll,
		LeaseDuration: o.lease, HandlerTimeout: o.handlerTimeout, Retry: proc.Retry, Breaker: proc.Breaker,
		SkipGivenUp: o.skipGivenUp, Clock: proc.Clock, Logger: log, Observers: observers,
	})
	if err != nil {
		return nil, logRelayRefused(err)
	}
	return &logRelay{
		run: r.Run, stop: r.Stop,
		drain: func(ctx context.Context) (logDrained, error) {
			st, err := r.Drain(ctx)
			return logDrained{st.Read, st.Delivered, st.Failed, st.Waiting, st.Duplicates, st.Held, st.Fault, st.Busy}, err
		},
		trim: func(ctx context.Context) error {
			res, err := l.pg.Retain(ctx)
			if err == nil && len(res.Truncated) > 0 {
				log.Debug("log retained", "partitions_truncated", len(res.Truncated), "held_by", res.HeldBy)
			}
			return err
		},
		waiting: r,
	}, nil
}

// logRelayFlags maps the log relay's fields to the flags that set them.
var logRelayFlags = map[string]string{
	"BatchSize": "--batch-size", "MaxConcurrent": "--max-concurrent", "PollInterval": "--poll-interval",
	"LeaseDuration": "--lease", "HandlerTimeout": "--handler-timeout", "Retry": "--retry-delays",
	"Breaker": "--breaker-threshold", "Concurrency": "--log-concurrency",
}

// logRelayRefused names the flag behind a setting the log relay refuses (the
// Processor accepted it: its limits differ, as PostgreSQL's 30ms floor on the lease).
func logRelayRefused(err error) error {
	var fe *outbox.FieldError
	if errors.As(err, &fe) {
		field := fe.Field[strings.LastIndex(fe.Field, "LogRelayConfig.")+len("LogRelayConfig."):]
		field, _, _ = strings.Cut(field, ".")
		if flag, ok := logRelayFlags[field]; ok {
			return usagef("%s %s (the log relay's limit)", flag, fe.Problem)
		}
	}
	return err
}

// logHold follows the holds of the log relay (a BreakerObserver among its observers),
// so that /readyz says when the sink's fault holds the log, as it does for the
// Processor's breaker.
type logHold struct {
	clock  outbox.Clock
	mu     sync.Mutex
	held   bool
	reason string
	since  time.Time
}

func (h *logHold) ObserveClaim(int, time.Duration)                             {}
func (h *logHold) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {}
func (h *logHold) ObserveUnavailable(outbox.Event, error)                      {}

func (h *logHold) ObserveHold(target, reason string, held bool) {
	if target != "" {
		return // the log relay holds the whole log; targets are the Processor's
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held, h.reason = held, reason
	if held {
		h.since = h.clock.Now()
	}
}

// err says that the log is held, and since when, or is nil.
func (h *logHold) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.held {
		return nil
	}
	return fmt.Errorf("delivery from the log held since %s: %s; events wait in the log, attempts not spent",
		h.since.UTC().Format(time.RFC3339), cmp.Or(h.reason, outbox.ReasonUnreachable))
}
