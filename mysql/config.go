package mysql

import (
	"cmp"
	"database/sql"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/fitiq/outbox"
)

// Defaults of Config.
const (
	// DefaultTable is the outbox table's name.
	DefaultTable = "outbox_events"
	// DefaultProbeInterval is how often a store with subscribers looks for events that
	// other writers committed.
	DefaultProbeInterval = 100 * time.Millisecond
)

// Config tunes a Store (and tells Migrate which table to create). Zero fields take
// their defaults; a value that cannot work makes New or Migrate fail with an error
// naming the field.
type Config struct {
	// Table names the outbox table, in the connection's current database; its
	// migrations bookkeeping table is "<Table>_schema_migrations". Defaults to
	// DefaultTable.
	Table string
	// MaxPayloadBytes is the largest payload an enqueue accepts. Keep it under the
	// server's max_allowed_packet. Defaults to outbox.DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// Isolation is the level of the store's own transactions (claims, settles,
	// retries, cleanup): sql.LevelReadCommitted or sql.LevelRepeatableRead. Under READ
	// COMMITTED a claim takes no gap locks, so it never holds up an enqueue. A server
	// that writes a statement-format binary log refuses writes at READ COMMITTED: use
	// REPEATABLE READ there (New checks). Defaults to sql.LevelReadCommitted.
	Isolation sql.IsolationLevel
	// ProbeInterval is how often, while processors are subscribed, the store reads the
	// table's highest seq (one primary-key lookup) to notice events committed by other
	// writers: EnqueueTx in a transaction the store did not run, or other processes.
	// The store's own commits wake subscribers at once. A negative value turns the
	// probe off; processors then rely on their PollInterval. Defaults to
	// DefaultProbeInterval.
	ProbeInterval time.Duration

	// Logger receives the store's log lines. Defaults to slog.Default().
	Logger *slog.Logger
	// OnEnqueue, when set, runs on every event this store enqueues, before it is
	// written: see outbox.EnqueueHook (oteloutbox's Tracing.EnqueueHook records the
	// trace an event is enqueued under).
	OnEnqueue outbox.EnqueueHook
}

const (
	// maxIdentifier is MySQL's limit on table names.
	maxIdentifier = 64
	// maxTable leaves room for the migrations table's suffix.
	maxTable = maxIdentifier - len("_schema_migrations")
)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c Config) withDefaults() Config {
	c.Table = cmp.Or(c.Table, DefaultTable)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, outbox.DefaultMaxPayloadBytes)
	c.Isolation = cmp.Or(c.Isolation, sql.LevelReadCommitted)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultProbeInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports whether c, with its defaults filled in, can work; the error names
// the field. New and Migrate call it.
func (c Config) Validate() error {
	c = c.withDefaults()
	if !identifier.MatchString(c.Table) {
		return configError("Table", fmt.Sprintf("must be a plain SQL identifier (letters, digits and underscores, not starting with a digit), got %q", c.Table))
	}
	if len(c.Table) > maxTable {
		return configError("Table", fmt.Sprintf("is %d bytes, over the limit of %d", len(c.Table), maxTable))
	}
	if c.MaxPayloadBytes < 0 {
		return configError("MaxPayloadBytes", fmt.Sprintf("must not be negative, got %d", c.MaxPayloadBytes))
	}
	if c.Isolation != sql.LevelReadCommitted && c.Isolation != sql.LevelRepeatableRead {
		return configError("Isolation", fmt.Sprintf("must be sql.LevelReadCommitted or sql.LevelRepeatableRead, got %s", c.Isolation))
	}
	return nil
}

func configError(field, problem string) error {
	return &outbox.FieldError{Field: "mysql.Config." + field, Problem: problem}
}

// names are the quoted identifiers the SQL is written with; migrations use them too.
type names struct {
	Table      string // `table`
	Migrations string // `table_schema_migrations`
	Paused     string // `table_paused_types`
	table      string // unquoted
}

func newNames(c Config) names {
	return names{
		Table:      "`" + c.Table + "`",
		Migrations: "`" + c.Table + "_schema_migrations`",
		Paused:     "`" + c.Table + "_paused_types`",
		table:      c.Table,
	}
}
