package inbox

import (
	"strings"
	"time"
)

// The statements of each dialect. {T} is replaced by the table name, which Validate
// has restricted to [a-z0-9_.], once, when the Inbox is built.
//
// Duplicate detection is a plain insert that does nothing on a conflict on the
// primary key. Inside the receiver's transaction, an insert of an ID that another
// open transaction has inserted waits on that key until the other commits (then it
// is a duplicate: nothing inserted) or rolls back (then it inserts, and applies).
const (
	sqliteRecord = `INSERT INTO {T} (id, recorded_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`
	// The bounded delete: the subquery reads the cleanup index in order.
	sqliteCleanup = `DELETE FROM {T} WHERE id IN (SELECT id FROM {T} WHERE recorded_at < ? ORDER BY recorded_at LIMIT ?)`
	sqliteCount   = `SELECT count(*) FROM {T}`

	// postgresRecord inserts only under READ COMMITTED, and says which level the
	// transaction runs at, in one round trip. Under REPEATABLE READ and SERIALIZABLE a
	// conflict with a row committed after the transaction's snapshot is a
	// serialization failure, which would abort the caller's transaction; there the
	// insert is retried under a savepoint (postgresRecordPlain), where that failure
	// means "a duplicate" and is rolled back to the savepoint.
	postgresRecord = `WITH level AS (SELECT current_setting('transaction_isolation') = 'read committed' AS rc),
ins AS (
    INSERT INTO {T} (id, recorded_at) SELECT $1, $2 FROM level WHERE rc
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
)
SELECT rc, EXISTS (SELECT FROM ins) FROM level`
	postgresRecordPlain = `INSERT INTO {T} (id, recorded_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`
	postgresSavepoint   = `SAVEPOINT inbox_record`
	postgresRollbackTo  = `ROLLBACK TO SAVEPOINT inbox_record`
	postgresRelease     = `RELEASE SAVEPOINT inbox_record`
	// SKIP LOCKED: two cleaners at once delete different rows instead of queueing.
	postgresCleanup = `DELETE FROM {T} WHERE id IN (
    SELECT id FROM {T} WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2 FOR UPDATE SKIP LOCKED
)`
	postgresCount = `SELECT count(*) FROM {T}`

	// INSERT IGNORE reports 0 rows for a duplicate whatever the connection's
	// clientFoundRows setting (ON DUPLICATE KEY UPDATE id = id would report 1 with it,
	// the same as an insert). What else IGNORE downgrades to a warning (a value too
	// long, a NULL) cannot happen: the ID's length is checked before, the time is set.
	mysqlRecord  = `INSERT IGNORE INTO {T} (id, recorded_at) VALUES (?, ?)`
	mysqlCleanup = `DELETE FROM {T} WHERE recorded_at < ? ORDER BY recorded_at LIMIT ?`
	mysqlCount   = `SELECT count(*) FROM {T}`
)

// queries are one inbox's statements, with its table name filled in.
type queries struct {
	record, cleanup, count string
	// Postgres only.
	recordPlain string
}

func newQueries(d Dialect, table string) queries {
	fill := func(q string) string { return strings.ReplaceAll(q, "{T}", table) }
	switch d {
	case Postgres:
		return queries{record: fill(postgresRecord), recordPlain: fill(postgresRecordPlain), cleanup: fill(postgresCleanup), count: fill(postgresCount)}
	case MySQL:
		return queries{record: fill(mysqlRecord), cleanup: fill(mysqlCleanup), count: fill(mysqlCount)}
	default:
		return queries{record: fill(sqliteRecord), cleanup: fill(sqliteCleanup), count: fill(sqliteCount)}
	}
}

// timeArg is how each dialect stores a time: SQLite as Unix microseconds, MySQL as a
// UTC DATETIME(6), PostgreSQL as timestamptz.
func timeArg(d Dialect, t time.Time) any {
	switch d {
	case SQLite:
		return t.UnixMicro()
	case MySQL:
		return t.UTC().Truncate(time.Microsecond)
	default:
		return t.Truncate(time.Microsecond)
	}
}
