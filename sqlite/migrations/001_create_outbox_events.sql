-- One row per event. Times are Unix microseconds (UTC); seq (the rowid) orders events.
CREATE TABLE outbox_events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    type             TEXT    NOT NULL CHECK (type <> ''),
    entity_id        TEXT    NOT NULL CHECK (entity_id <> ''),
    user_id          TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 0,  -- 0: the processor's default
    priority         INTEGER NOT NULL DEFAULT 0,
    is_new_record    INTEGER NOT NULL DEFAULT 0,
    metadata         TEXT,                        -- JSON object
    payload          TEXT,                        -- JSON
    ordering_key     TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    next_attempt_at  INTEGER,                     -- NULL on a failed event: given up
    completed_at     INTEGER,
    last_error       TEXT,
    errors           TEXT,                        -- JSON array of {attempt, at, error}
    lease_owner      TEXT,
    lease_expires_at INTEGER
);

-- Every index on a pending row costs each enqueueing transaction a B-tree page write, so
-- a new event touches as few as possible: the table, the ID, this claim index, and the
-- ordering-key index when it has a key. The other indexes only hold events once a
-- processor has touched them.

-- Claims of never-attempted events in delivery order; covering for counts of pending
-- events by user, type and staleness.
CREATE INDEX outbox_events_pending ON outbox_events (priority DESC, seq, user_id, type, next_attempt_at)
    WHERE status = 'pending';

-- Ordering keys: the head of a key is its lowest seq not yet completed.
CREATE INDEX outbox_events_key ON outbox_events (ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND status <> 'completed';

-- Events a processor has touched: counts by status and type (covering), due retries,
-- expired leases, stale and given-up events.
CREATE INDEX outbox_events_touched ON outbox_events (status, type, next_attempt_at, user_id)
    WHERE status <> 'pending';

-- Cleanup of completed events past retention.
CREATE INDEX outbox_events_completed ON outbox_events (completed_at) WHERE status = 'completed';
