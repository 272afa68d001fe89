-- The event log: one row per event, appended in the writer's transaction and never
-- updated. xid is the writer's top-level transaction ID (a row written inside a
-- savepoint carries it too): it is what a reader's snapshot says is committed or not,
-- so the cursor reads by it (see log_cursor.go). seq orders the events of one
-- transaction. The primary key is the only index: every other one would be paid by
-- every enqueue. There is no CHECK either; AppendTx validates in Go, as the table
-- layout's enqueue does before its CHECKs.
--
-- id is not UNIQUE: AppendTx generates UUIDv7s, and an index to refuse a caller's
-- duplicate would cost every insert. metadata is json, not jsonb: the log never
-- queries it, and json is stored as written without a parse into binary.
CREATE TABLE {{.Table}} (
    xid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    created_at    timestamptz NOT NULL,
    id            uuid        NOT NULL,
    max_attempts  integer     NOT NULL DEFAULT 0, -- 0: the processor's default
    priority      integer     NOT NULL DEFAULT 0,
    is_new_record boolean     NOT NULL DEFAULT false,
    type          text        NOT NULL,
    entity_id     text        NOT NULL,
    user_id       text        NOT NULL DEFAULT '',
    ordering_key  text,
    metadata      json,                 -- object of strings
    payload       json,                 -- handed to the handler byte for byte
    CONSTRAINT {{.Name "pkey"}} PRIMARY KEY (xid, seq)
);

-- One row per cursor: where it is in the log. snapshot is a pg_snapshot as text, and
-- every event visible in it has been delivered. While a pair of snapshots is delivered
-- in parts (a batch limit), next is the later snapshot and (after_xid, after_seq) the
-- last event of it delivered; otherwise all three are NULL. Written only when a reader
-- acknowledges a batch.
CREATE TABLE {{.Cursors}} (
    name       text        PRIMARY KEY,
    snapshot   text        NOT NULL,
    next       text,
    after_xid  xid8,
    after_seq  bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
