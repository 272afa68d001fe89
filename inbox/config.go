package inbox

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/fitiq/outbox"
)

// Dialect is the SQL dialect of the receiver's database.
type Dialect int

// The dialects an Inbox speaks. Each is reached through database/sql: SQLite with
// modernc.org/sqlite, PostgreSQL with github.com/jackc/pgx/v5/stdlib, MySQL and
// MariaDB with github.com/go-sql-driver/mysql.
const (
	SQLite Dialect = iota + 1
	Postgres
	MySQL
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	case MySQL:
		return "mysql"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Defaults of Config.
const (
	// DefaultTable is the table of processed message IDs.
	DefaultTable = "inbox_messages"
	// DefaultRetention is how long a processed ID is kept: 30 days. The outbox's retry
	// schedule (1s, 5s, 30s, 2m, 10m) ends about 13 minutes after the first attempt,
	// but a delivered event can come again much later: a relay that crashed before
	// recording the delivery leaves it for the next relay to run, however long the
	// relays are down, and an operator may retry a given-up event (kept until deleted)
	// whose delivery did land. 30 days covers a long outage, and the outbox's 7-day
	// retention four times over.
	DefaultRetention = 30 * 24 * time.Hour
	// MaxIDLength is the longest message ID accepted, in bytes.
	MaxIDLength = 255
)

// Config tunes an Inbox (and tells Migrate where its table lives).
type Config struct {
	// Dialect is the database's SQL dialect. Required.
	Dialect Dialect
	// Table names the table of processed IDs; its index and its migrations
	// bookkeeping table ("<Table>_schema_migrations") are named after it. On
	// PostgreSQL and MySQL it may be qualified with an existing schema or database
	// ("app.inbox_messages"). Lower-case letters, digits and '_'. Defaults to
	// DefaultTable.
	Table string
	// Retention is how long a processed ID is kept, counted from the later of its
	// processing and its message's time (see MessageTime). Cleanup deletes older IDs,
	// and a message older than Retention is refused with ErrExpired, since its first
	// delivery's ID may have been deleted already. Defaults to DefaultRetention.
	Retention time.Duration
	// MessageTime tells when a message was created, from its ID; ok false means
	// unknown, and the message is never refused as expired. Defaults to UUIDv7Time,
	// which reads the time in an outbox event ID (a UUIDv7) and knows nothing of other
	// IDs.
	MessageTime func(msgID string) (t time.Time, ok bool)
	// Clock supplies the processing time. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Observer, when set, is told the result of every message (for metrics).
	Observer Observer
}

var tableName = regexp.MustCompile(`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,40}$`)

func (c Config) withDefaults() Config {
	c.Table = cmp.Or(c.Table, DefaultTable)
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	if c.MessageTime == nil {
		c.MessageTime = UUIDv7Time
	}
	if c.Clock == nil {
		c.Clock = outbox.SystemClock
	}
	return c
}

// Validate reports the first field of c that cannot work, as an *outbox.FieldError
// (which matches outbox.ErrInvalid). Zero fields are valid where they have a default.
func (c Config) Validate() error {
	switch c.Dialect {
	case SQLite, Postgres, MySQL:
	case 0:
		return fieldError("Dialect", "must be set (inbox.SQLite, inbox.Postgres or inbox.MySQL)")
	default:
		return fieldError("Dialect", fmt.Sprintf("%d is not a dialect", int(c.Dialect)))
	}
	if c.Table != "" {
		if !tableName.MatchString(c.Table) {
			return fieldError("Table", fmt.Sprintf("%q: want lower-case letters, digits and '_' (optionally schema.table), at most 40 for the table", c.Table))
		}
		if c.Dialect == SQLite && strings.Contains(c.Table, ".") {
			return fieldError("Table", fmt.Sprintf("%q: SQLite tables cannot be qualified", c.Table))
		}
	}
	if c.Retention < 0 {
		return fieldError("Retention", fmt.Sprintf("must not be negative, got %s", c.Retention))
	}
	return nil
}

func fieldError(field, problem string) error {
	return &outbox.FieldError{Field: "inbox.Config." + field, Problem: problem}
}

// names are the SQL identifiers of one inbox, filled into the migrations and queries.
type names struct {
	Table      string // as configured, possibly schema-qualified
	Name       string // the table's own name, unqualified
	Index      string // the cleanup index, unqualified (it lives in the table's schema)
	Migrations string // the bookkeeping table, qualified like Table
}

func newNames(table string) names {
	prefix, name := "", table
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		prefix, name = table[:i+1], table[i+1:]
	}
	return names{Table: table, Name: name, Index: name + "_recorded_at", Migrations: prefix + name + "_schema_migrations"}
}
