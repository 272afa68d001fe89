-- Tables for log.sh and log-insert.sh: the plain two-row transaction's tables, the log
-- layout's row in several shapes, and Watermill's row, to price what the log's shape adds to
-- a row. Everything is in bench_pgbench_log,
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
-- ringdirect (log_ringdirect.sql): the ringcol ring written one partition at a time, by name,
-- so no row is routed through the parent. A partition does not inherit the parent's identity
-- (PostgreSQL 15), so its seq takes the parent's sequence by a default of its own, and its ring_pos is
-- its own lower bound.
DO $$ BEGIN FOR i IN 0..15 LOOP
  EXECUTE format('ALTER TABLE ringcol_p%s ALTER COLUMN seq SET DEFAULT nextval(%L), ALTER COLUMN ring_pos SET DEFAULT %s',
                 i, pg_get_serial_sequence('ringcol', 'seq'), i * 65536);
END LOOP; END $$;
-- wm (log_wm.sql): Watermill's PostgreSQL schema adapter's table, its insert as the adapter writes it
CREATE TABLE wm ("offset" bigserial, uuid varchar(36) NOT NULL,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, payload json DEFAULT NULL,
    metadata json DEFAULT NULL, transaction_id xid8 NOT NULL, PRIMARY KEY (transaction_id, "offset"));
-- logpos: the flat log with the ring's ring_pos column and its default, and no partitions, to
-- tell what the column costs from what the partitions cost
CREATE TABLE logpos (LIKE ringcol INCLUDING DEFAULTS INCLUDING IDENTITY, PRIMARY KEY (xid, seq));
