-- The ring's partition key becomes a column. Migration 002 partitioned the log by an
-- expression, the xid modulo the ring's span, and PostgreSQL prepares a partition key's
-- expression afresh for every statement that routes a row through the parent, so every
-- append paid for that. ring_pos holds the same value, computed by the column's
-- default in the appender's own plan, which a prepared INSERT keeps; routing by a
-- plain column prepares nothing. The ring does not change: the same partitions with the
-- same bounds (in units of xid modulo the span), so retention (log_retention.go) reads
-- it as before. A writer never sets ring_pos, as it never sets xid: both are the
-- defaults' to fill.
--
-- The ring's shape comes from the existing log, not from the config, because a log
-- keeps the ring it was made with. Under the lock (appenders wait for the migration),
-- the old ring is renamed aside, the new one made with its partitions' names and
-- bounds, the events copied with their xid, seq and shard, the identity set to go on
-- from where it was, and the old ring dropped.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;

ALTER TABLE {{.Table}} RENAME TO {{.Name "ring_by_expression"}};

DO $$
DECLARE
    old    regclass := '{{.Schema}}.{{.Name "ring_by_expression"}}'::regclass;
    schema text;
    span   bigint;
    p      record;
BEGIN
    SELECT n.nspname INTO schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = old;
    -- The key is ((xid::text)::bigint % <span>), which the catalog prints with the span
    -- in parentheses or quotes and a cast.
    span := substring(pg_get_partkeydef(old) FROM '%\s*[(''\s]*(\d+)')::bigint;
    IF span IS NULL THEN
        RAISE EXCEPTION 'outbox log: unexpected partition key of %: %', old, pg_get_partkeydef(old);
    END IF;

    EXECUTE format('CREATE TABLE {{.Table}} (LIKE %s INCLUDING DEFAULTS INCLUDING IDENTITY,
        ring_pos bigint NOT NULL DEFAULT ((pg_current_xact_id()::text)::bigint %% %s)) PARTITION BY RANGE (ring_pos)',
        old, span);

    FOR p IN
        SELECT c.oid::regclass AS part, c.relname::text AS name, k.conname::text AS pkey,
            pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
        WHERE i.inhparent = old
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', p.part, p.pkey, p.pkey || '_old');
        EXECUTE format('ALTER TABLE %s RENAME TO %I', p.part, p.name || '_old');
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF {{.Table}} (CONSTRAINT %I PRIMARY KEY (shard, xid, seq)) %s',
            schema, p.name, p.pkey, p.bound);
    END LOOP;

    EXECUTE format('INSERT INTO {{.Table}} (xid, seq, created_at, id, max_attempts, priority, is_new_record,
            type, entity_id, user_id, ordering_key, metadata, payload, shard, ring_pos)
        OVERRIDING SYSTEM VALUE
        SELECT xid, seq, created_at, id, max_attempts, priority, is_new_record,
            type, entity_id, user_id, ordering_key, metadata, payload, shard, (xid::text)::bigint %% %s
        FROM %s', span, old);

    PERFORM setval(pg_get_serial_sequence('{{.Table}}', 'seq'), last)
    FROM (SELECT pg_sequence_last_value(pg_get_serial_sequence(old::text, 'seq')::regclass) AS last) s
    WHERE last IS NOT NULL;

    EXECUTE format('DROP TABLE %s', old);
END
$$;
