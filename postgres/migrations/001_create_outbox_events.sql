-- One row per event. seq orders events (the store's sequence, not a timestamp);
-- id is the event's UUIDv7. Times are microsecond timestamps.
CREATE TABLE {{.Table}} (
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               uuid        NOT NULL CONSTRAINT {{.Name "id_key"}} UNIQUE,
    type             text        NOT NULL CHECK (type <> ''),
    entity_id        text        NOT NULL CHECK (entity_id <> ''),
    user_id          text        NOT NULL DEFAULT '',
    status           text        NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 0 CHECK (max_attempts >= 0), -- 0: the processor's default
    priority         integer     NOT NULL DEFAULT 0,
    is_new_record    boolean     NOT NULL DEFAULT false,
    metadata         jsonb,                   -- object of strings
    payload          json,                    -- json, not jsonb: handed to the handler byte for byte
    ordering_key     text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,             -- NULL on a failed event: given up
    completed_at     timestamptz,
    last_error       text,
    errors           jsonb,                   -- array of {attempt, at (Unix µs), error}
    lease_owner      text,
    lease_expires_at timestamptz
);

-- Every index but the two keys is partial: an event is in the index of its current
-- state only, so the cost of a claim, a count or a cleanup batch follows the events in
-- that state, not the size of the table (which is mostly completed events).

-- Claims of never-attempted events, in delivery order.
CREATE INDEX {{.Name "pending"}} ON {{.Table}} (priority DESC, seq) WHERE status = 'pending';

-- Due retries (next_attempt_at <= now) and given-up events (next_attempt_at IS NULL).
CREATE INDEX {{.Name "failed"}} ON {{.Table}} (next_attempt_at) WHERE status = 'failed';

-- Events in flight, by lease expiry: expired leases are found without a scan.
CREATE INDEX {{.Name "leased"}} ON {{.Table}} (lease_expires_at) WHERE status = 'processing';

-- Ordering keys: the head of a key is its lowest seq not yet completed.
CREATE INDEX {{.Name "key"}} ON {{.Table}} (ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND status <> 'completed';

-- At most one event of a key in flight, whatever the relays' snapshots saw: the
-- database refuses a second one (see the claim in queries.go).
CREATE UNIQUE INDEX {{.Name "key_in_flight"}} ON {{.Table}} (ordering_key)
    WHERE ordering_key IS NOT NULL AND status = 'processing';

-- Cleanup past retention, oldest first.
CREATE INDEX {{.Name "completed"}} ON {{.Table}} (completed_at) WHERE status = 'completed';

-- The completed counts of Stats, read from the index alone: one user's in proportion
-- to that user's events, everyone's without reading the table.
CREATE INDEX {{.Name "completed_by_user"}} ON {{.Table}} (user_id, type) WHERE status = 'completed';
