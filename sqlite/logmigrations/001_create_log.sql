-- The event log: one row per event, appended in the writer's transaction and never
-- updated. seq is the rowid (an INTEGER PRIMARY KEY is its alias), and it is the
-- order events are read in: SQLite has one writer at a time, and a rowid is assigned
-- while the writer holds the lock, so seq order is commit order (see log.go).
--
-- No AUTOINCREMENT: it writes sqlite_sequence in every appending transaction, one
-- more page per commit. Without it a new rowid is one more than the largest in the
-- table, and that is safe as long as the largest row is never deleted: Log.Trim
-- deletes only rows below every cursor's position, so the row at the lowest position
-- and all above it stay.
--
-- The primary key is the only index, and there is no CHECK: AppendTx validates in Go,
-- as the table layout's enqueue does. id is not UNIQUE: an index to refuse a caller's
-- duplicate ID would cost every insert. Times are Unix microseconds (UTC).
CREATE TABLE outbox_log (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    ordering_key  TEXT,
    max_attempts  INTEGER NOT NULL, -- 0: the processor's default
    priority      INTEGER NOT NULL,
    is_new_record INTEGER NOT NULL,
    metadata      TEXT,             -- JSON object of strings
    payload       TEXT,             -- JSON, handed to the handler byte for byte
    created_at    INTEGER NOT NULL
);

-- One row per cursor: every event with seq <= after_seq has been delivered. Written
-- only when a reader acknowledges a batch.
CREATE TABLE outbox_log_cursors (
    name       TEXT    PRIMARY KEY,
    after_seq  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
