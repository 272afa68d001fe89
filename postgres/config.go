package postgres

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

// Config tunes a Store (and tells Migrate where the outbox lives). Zero fields take
// their defaults; a value that cannot work makes New or Migrate fail with an error
// naming the field.
type Config struct {
	// Schema holds the outbox table. Migrate creates it when it does not exist.
	// Defaults to DefaultSchema.
	Schema string
	// Table names the outbox table; its indexes and its migrations bookkeeping table
	// ("<Table>_schema_migrations") are named after it. Defaults to DefaultTable.
	Table string
	// MaxPayloadBytes is the largest payload an enqueue accepts. Defaults to
	// outbox.DefaultMaxPayloadBytes.
	MaxPayloadBytes int

	// Channel is the LISTEN/NOTIFY channel. Every enqueue (and retry, and release of
	// unstarted events) sends a notification on it whose payload is the event's user
	// ID, once the event has committed. An EnqueueTx or EnqueueSQLTx after a quiet spell
	// (no other for WatchInterval) sends it inside the transaction, which PostgreSQL
	// delivers when, and only if, that transaction commits; the others do not, since a
	// notifying commit holds a cluster-wide lock through its WAL flush. For those the
	// store sends it: after the commit in a transaction of Transact (and after Enqueue),
	// gathered per NotifyDebounce; for a caller's own transaction once it sees the events
	// committed, which it looks for by their seq every WatchInterval for a short while
	// and then less often. Defaults to "<Schema>.<Table>".
	Channel string
	// DisableNotify stops the store from sending notifications. Relays then find new
	// events at their next poll. Defaults to false.
	DisableNotify bool
	// DisableListen stops the store from holding a LISTEN connection: processors are
	// woken by this store's own commits and otherwise poll every PollInterval. Set it
	// where notifications never arrive, such as behind a transaction-mode connection
	// pooler. Defaults to false.
	DisableListen bool
	// NotifyDebounce is the least time between two NOTIFYs the store sends after its
	// own commits (Enqueue, Transact), and between two wake-ups it fans out to this
	// process's processors from the notifications it receives: the first after a quiet
	// spell goes at once, those within NotifyDebounce of it are gathered into one.
	// When WatchInterval is unset it also sets that, to four of it, as it did before
	// WatchInterval existed. Defaults to DefaultNotifyDebounce.
	NotifyDebounce time.Duration
	// WatchInterval is how often the store looks for the commits of callers'
	// transactions whose enqueues (EnqueueTx, EnqueueSQLTx outside Transact) sent no
	// NOTIFY: one statement per look, for every event due by then, during an event's
	// first 20 intervals, then at doubling intervals up to a second, for 10 seconds at
	// most. It is also the quiet spell after which an enqueue in a transaction sends its
	// NOTIFY inside it (see Channel): within it, a look is coming anyway. Defaults to
	// four NotifyDebounce, which is DefaultWatchInterval when NotifyDebounce is unset.
	WatchInterval time.Duration
	// ReconnectMaxDelay caps the wait between attempts to re-establish a lost LISTEN
	// connection; the wait starts at 100ms and doubles. Processors poll meanwhile.
	// Defaults to DefaultReconnectMaxDelay.
	ReconnectMaxDelay time.Duration

	// ListenCheckInterval is how long the LISTEN connection may stay quiet before it
	// must answer a ping, within the same time; one that does not is replaced (a
	// connection whose server or network went silent receives nothing, and would
	// say nothing). Defaults to DefaultListenCheckInterval.
	ListenCheckInterval time.Duration

	// Logger receives the store's log lines. Defaults to slog.Default().
	Logger *slog.Logger
	// OnEnqueue, when set, runs on every event this store enqueues, before it is
	// written: see outbox.EnqueueHook (oteloutbox's Tracing.EnqueueHook records the
	// trace an event is enqueued under).
	OnEnqueue outbox.EnqueueHook
}

const (
	// DefaultNotifyDebounce is Config.NotifyDebounce's default.
	DefaultNotifyDebounce = time.Millisecond
	// DefaultWatchInterval is Config.WatchInterval's default: four
	// DefaultNotifyDebounce.
	DefaultWatchInterval = watchPerDebounce * DefaultNotifyDebounce
	// DefaultReconnectMaxDelay is Config.ReconnectMaxDelay's default.
	DefaultReconnectMaxDelay = 5 * time.Second
	// DefaultListenCheckInterval is Config.ListenCheckInterval's default.
	DefaultListenCheckInterval = 10 * time.Second
)

// watchPerDebounce is how many NotifyDebounce make the WatchInterval a Config leaves
// unset.
const watchPerDebounce = 4

// The names Config takes when Schema and Table are left out.
const (
	DefaultSchema = "public"
	DefaultTable  = "outbox_events"
)

const (
	// maxIdentifier is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated.
	maxIdentifier = 63
	// maxTable leaves room for the longest name derived from the table's.
	maxTable = maxIdentifier - len("_schema_migrations")
)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.Table = cmp.Or(c.Table, DefaultTable)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, outbox.DefaultMaxPayloadBytes)
	c.Channel = cmp.Or(c.Channel, c.Schema+"."+c.Table)
	c.NotifyDebounce = cmp.Or(c.NotifyDebounce, DefaultNotifyDebounce)
	if c.WatchInterval == 0 {
		// Derived, so that a Config that sets only NotifyDebounce keeps its timings.
		c.WatchInterval = watchPerDebounce * c.NotifyDebounce
		if c.NotifyDebounce > math.MaxInt64/watchPerDebounce {
			c.WatchInterval = math.MaxInt64
		}
	}
	c.ReconnectMaxDelay = cmp.Or(c.ReconnectMaxDelay, DefaultReconnectMaxDelay)
	c.ListenCheckInterval = cmp.Or(c.ListenCheckInterval, DefaultListenCheckInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate checks a Config whose defaults are filled.
func (c Config) validate() error {
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"Schema", c.Schema, maxIdentifier},
		{"Table", c.Table, maxTable},
	} {
		if !identifier.MatchString(f.value) {
			return configError(f.name, fmt.Sprintf("must be a plain SQL identifier (letters, digits and underscores, not starting with a digit), got %q", f.value))
		}
		if len(f.value) > f.max {
			return configError(f.name, fmt.Sprintf("is %d bytes, over the limit of %d", len(f.value), f.max))
		}
	}
	if len(c.Channel) > maxIdentifier {
		return configError("Channel", fmt.Sprintf("is %d bytes, over PostgreSQL's limit of %d; set a shorter one", len(c.Channel), maxIdentifier))
	}
	if c.MaxPayloadBytes < 0 {
		return configError("MaxPayloadBytes", fmt.Sprintf("must not be negative, got %d", c.MaxPayloadBytes))
	}
	if c.NotifyDebounce < 0 {
		return configError("NotifyDebounce", fmt.Sprintf("must not be negative, got %s", c.NotifyDebounce))
	}
	if c.WatchInterval < 0 {
		return configError("WatchInterval", fmt.Sprintf("must not be negative, got %s", c.WatchInterval))
	}
	if c.ReconnectMaxDelay < 0 {
		return configError("ReconnectMaxDelay", fmt.Sprintf("must not be negative, got %s", c.ReconnectMaxDelay))
	}
	if c.ListenCheckInterval < 0 {
		return configError("ListenCheckInterval", fmt.Sprintf("must not be negative, got %s", c.ListenCheckInterval))
	}
	return nil
}

// Validate reports the first field of c that cannot work, naming it, with the
// defaults applied to zero fields; New and Migrate call it. Callers need it only to
// check a configuration before connecting, as the outbox command does.
func (c Config) Validate() error { return c.withDefaults().validate() }

func configError(field, problem string) error {
	return &outbox.FieldError{Field: "postgres.Config." + field, Problem: problem}
}

// names are the quoted identifiers the SQL is written with.
type names struct {
	Table      string // "schema"."table"
	Schema     string // "schema"
	Migrations string // "schema"."table_schema_migrations"
	Listen     string // "channel", for LISTEN
	Paused     string // "schema"."table_paused_types"
	table      string // unquoted, for index names
}

func newNames(c Config) names {
	return names{
		Table:      pgx.Identifier{c.Schema, c.Table}.Sanitize(),
		Schema:     pgx.Identifier{c.Schema}.Sanitize(),
		Migrations: pgx.Identifier{c.Schema, c.Table + "_schema_migrations"}.Sanitize(),
		Listen:     pgx.Identifier{c.Channel}.Sanitize(),
		Paused:     pgx.Identifier{c.Schema, c.Table + "_paused_types"}.Sanitize(),
		table:      c.Table,
	}
}

// Name returns the quoted name of one of the table's indexes or constraints,
// "<table>_<suffix>"; migrations call it.
func (n names) Name(suffix string) string { return pgx.Identifier{n.table + "_" + suffix}.Sanitize() }
