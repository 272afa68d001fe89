-- Tables for log.sh: the plain two-row transaction's tables, and the log layout's row four
-- ways, to price what the log's shape adds to a row. Everything is in bench_pgbench_log,
-- which log.sh drops when done.
DROP SCHEMA IF EXISTS bench_pgbench_log CASCADE;
CREATE SCHEMA bench_pgbench_log;
SET search_path = bench_pgbench_log;
CREATE TABLE orders (id uuid PRIMARY KEY, user_id text NOT NULL, amount int NOT NULL);
-- plain: the minimal event row of bench/'s plain system
CREATE TABLE events (id uuid PRIMARY KEY, payload json);
-- log: the log's columns as postgres/logmigrations/001 made them, one table, PK (xid, seq)
CREATE TABLE log (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(), seq bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL, id uuid NOT NULL, max_attempts integer NOT NULL DEFAULT 0,
    priority integer NOT NULL DEFAULT 0, is_new_record boolean NOT NULL DEFAULT false,
    type text NOT NULL, entity_id text NOT NULL, user_id text NOT NULL DEFAULT '',
    ordering_key text, metadata json, payload json, PRIMARY KEY (xid, seq));
-- ring: the same columns in migration 002's ring of 16 partitions by xid, keyed by an expression
CREATE TABLE ring (LIKE log INCLUDING DEFAULTS INCLUDING IDENTITY)
    PARTITION BY RANGE (((xid::text)::bigint % 1048576));
DO $$ BEGIN FOR i IN 0..15 LOOP
  EXECUTE format('CREATE TABLE ring_p%s PARTITION OF ring (PRIMARY KEY (xid, seq)) FOR VALUES FROM (%s) TO (%s)',
                 i, i * 65536, (i + 1) * 65536);
END LOOP; END $$;
-- ringcol: the ring as migration 004 keys it, by a column its default fills with the same value
CREATE TABLE ringcol (LIKE log INCLUDING DEFAULTS INCLUDING IDENTITY,
    ring_pos bigint NOT NULL DEFAULT ((pg_current_xact_id()::text)::bigint % 1048576))
    PARTITION BY RANGE (ring_pos);
DO $$ BEGIN FOR i IN 0..15 LOOP
  EXECUTE format('CREATE TABLE ringcol_p%s PARTITION OF ringcol (PRIMARY KEY (xid, seq)) FOR VALUES FROM (%s) TO (%s)',
                 i, i * 65536, (i + 1) * 65536);
END LOOP; END $$;
-- seqonly: the same columns without the xid column, keyed by seq alone
CREATE TABLE seqonly (LIKE log INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE seqonly DROP COLUMN xid, ADD PRIMARY KEY (seq);
