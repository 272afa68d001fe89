-- One row per event. seq orders events; id is the event's UUIDv7 as 16 bytes. Times
-- are Unix microseconds (UTC) in BIGINT columns, so that neither the driver's
-- parseTime/loc settings nor the session time zone can shift them.
--
-- MySQL has no partial indexes. Their place is taken by STORED generated columns that
-- hold a value only in the states an index is about (NULL otherwise), and by indexes
-- that lead with status, so that every claim, count and cleanup reads the range of
-- its state only, however many completed events the table holds.
CREATE TABLE {{.Table}} (
    seq              BIGINT       NOT NULL AUTO_INCREMENT,
    id               BINARY(16)   NOT NULL,
    type             VARCHAR(255) NOT NULL,
    entity_id        VARCHAR(255) NOT NULL,
    user_id          VARCHAR(255) NOT NULL DEFAULT '',
    status           VARCHAR(10)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempts         INT          NOT NULL DEFAULT 0,
    max_attempts     INT          NOT NULL DEFAULT 0,  -- 0: the processor's default
    priority         INT          NOT NULL DEFAULT 0,
    is_new_record    BOOLEAN      NOT NULL DEFAULT FALSE,
    metadata         JSON         NULL,                -- object of strings
    payload          LONGBLOB     NULL,                -- not JSON: MySQL would rewrite it; handed over byte for byte
    ordering_key     VARCHAR(255) NULL,
    created_at       BIGINT       NOT NULL,
    updated_at       BIGINT       NOT NULL,
    last_attempt_at  BIGINT       NULL,
    next_attempt_at  BIGINT       NULL,                -- NULL on a failed event: given up
    completed_at     BIGINT       NULL,
    last_error       MEDIUMTEXT   NULL,
    errors           JSON         NULL,                -- array of {attempt, at (Unix µs), error}
    lease_owner      VARCHAR(255) NULL,
    lease_expires_at BIGINT       NULL,

    -- Claims read priority high to low and seq low to high; an ascending index on the
    -- negated priority gives that order on every supported server.
    neg_priority     BIGINT AS (-priority) STORED,
    -- The time that matters in the row's state: when a pending or failed event is due
    -- (NULL: given up), when a lease expires, when an event completed.
    state_at         BIGINT AS (CASE status WHEN 'processing' THEN lease_expires_at
                                            WHEN 'completed'  THEN completed_at
                                            ELSE next_attempt_at END) STORED,
    -- The ordering key of an unfinished event: the heads of keys are found without
    -- reading a key's completed history.
    open_key         VARCHAR(255) AS (CASE WHEN status <> 'completed' THEN ordering_key END) STORED,
    -- The ordering key of an event in flight. UNIQUE (NULLs excepted) makes the server
    -- refuse a second event of a key in flight, whatever two claimers saw.
    key_in_flight    VARCHAR(255) AS (CASE WHEN status = 'processing' THEN ordering_key END) STORED,

    PRIMARY KEY (seq),
    UNIQUE KEY id_key (id),
    -- Pending claims, in delivery order.
    KEY claim (status, neg_priority, seq),
    -- Due retries, expired leases, stale and given-up events, cleanup past retention.
    KEY due (status, state_at),
    -- Ordering keys: the head of a key is its lowest unfinished seq.
    KEY open_key (open_key, seq),
    UNIQUE KEY key_in_flight (key_in_flight),
    -- A per-user processor's claims, in delivery order (so that a claim stops at its
    -- limit instead of sorting, and locking, all of the user's pending events); and the
    -- counts of Stats, read from the index alone, per user or for everyone.
    KEY counts (status, user_id, neg_priority, seq, type, state_at, created_at),

    CHECK (type <> ''),
    CHECK (entity_id <> ''),
    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    CHECK (max_attempts >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
