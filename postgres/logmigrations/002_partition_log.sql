-- Retention by partition: the log becomes a ring of {{.Partitions}} partitions, so that
-- events every cursor has passed go away by a TRUNCATE of a whole partition, never by
-- DELETE (log_retention.go). A row's partition is chosen by its xid modulo the ring's
-- span of {{.RingXIDs}} transaction IDs: {{.PartitionXIDs}} consecutive xids share a
-- partition, the next {{.PartitionXIDs}} go to the next one, and after the last comes
-- the first again. Every xid has a partition, so an append never fails for want of one,
-- and no DDL changes the ring after this migration: retention only truncates.
--
-- The partition key is an expression, so the parent cannot have a primary key. Each
-- partition has its own on (xid, seq), and (xid, seq) stays unique across the log
-- because all rows of one xid are in one partition. The parent keeps the log's name,
-- its columns, defaults and identity, so appends and reads name it as before.
--
-- An existing log's events are copied into the ring in this transaction, and the old
-- table dropped. The lock is taken first, so that no append is in flight into the old
-- table; appenders wait for the copy. seq goes on from where the old sequence was.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;

ALTER TABLE {{.Table}} RENAME TO {{.Name "unpartitioned"}};

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
    payload       json                  -- handed to the handler byte for byte
) PARTITION BY RANGE (((xid::text)::bigint % {{.RingXIDs}}));
{{range .Slots}}
CREATE TABLE {{.Table}} PARTITION OF {{$.Table}} (
    CONSTRAINT {{.PKey}} PRIMARY KEY (xid, seq)
) FOR VALUES FROM ({{.From}}) TO ({{.To}});
{{end}}
INSERT INTO {{.Table}} (xid, seq, created_at, id, max_attempts, priority, is_new_record,
    type, entity_id, user_id, ordering_key, metadata, payload)
OVERRIDING SYSTEM VALUE
SELECT xid, seq, created_at, id, max_attempts, priority, is_new_record,
    type, entity_id, user_id, ordering_key, metadata, payload
FROM {{.Schema}}.{{.Name "unpartitioned"}};

SELECT setval(pg_get_serial_sequence('{{.Table}}', 'seq'), last)
FROM (SELECT pg_sequence_last_value(
    pg_get_serial_sequence('{{.Schema}}.{{.Name "unpartitioned"}}', 'seq')::regclass) AS last) s
WHERE last IS NOT NULL;

DROP TABLE {{.Schema}}.{{.Name "unpartitioned"}};
