-- Shards (log_shard.go): every event belongs to one of {{.Shards}} shards, by its
-- ordering key or, when it has none, its entity, so that a key's events are all in one
-- shard; each shard has a cursor of its own per cursor name, and relays share the
-- shards, one relay at a time per shard. The number of shards is fixed here, for the
-- life of the log: <table>_shards() returns it, and NewLog refuses a config that says
-- otherwise.
--
-- <table>_shard(key) is the shard of a key: FNV-1a, 32 bits, of the key's UTF-8 bytes,
-- modulo the number of shards. AppendTx computes the same in Go and writes it; a writer
-- in another language writes shard = <table>_shard(coalesce(ordering_key, entity_id)).
-- On a log of more than one shard the column has no default, so that a writer that
-- leaves it out fails instead of putting a key's events in a shard its relays do not
-- read in order with the rest of the key.
--
-- The primary key of each partition of the ring becomes (shard, xid, seq): a shard's
-- read is then the same two index ranges as before, each prefixed by the shard, and the
-- log still has one index.
--
-- An existing log: under the lock (appenders wait for the migration), every event is
-- given the shard of its key, and every cursor becomes one per shard, each at the
-- cursor's position. A position is a set of transactions whose events were delivered
-- (a snapshot, and within a pair the last (xid, seq) delivered), so that set, read in one
-- shard, is exactly what was delivered of that shard: no event is skipped, none read
-- again, and a key's events stay in one shard, in their order.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;

CREATE FUNCTION {{.Schema}}.{{.Name "shards"}}() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT {{.Shards}}';

CREATE FUNCTION {{.Schema}}.{{.Name "shard"}}(key text) RETURNS smallint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    b bytea := convert_to(key, 'UTF8');
    h bigint := 2166136261;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        h := ((h # get_byte(b, i)) * 16777619) & 4294967295;
    END LOOP;
    RETURN (h % {{.Shards}})::smallint;
END
$$;

ALTER TABLE {{.Table}} ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE {{.Cursors}} ADD COLUMN shard smallint NOT NULL DEFAULT 0;
{{if gt .Shards 1}}
UPDATE {{.Table}} SET shard = {{.Schema}}.{{.Name "shard"}}(coalesce(ordering_key, entity_id));

ALTER TABLE {{.Table}} ALTER COLUMN shard DROP DEFAULT;

WITH old AS (DELETE FROM {{.Cursors}} RETURNING *)
INSERT INTO {{.Cursors}} (name, shard, snapshot, next, after_xid, after_seq, updated_at)
SELECT old.name || '/' || s, s, old.snapshot, old.next, old.after_xid, old.after_seq, old.updated_at
FROM old, generate_series(0, {{.Shards}} - 1) AS s;
{{end}}
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT c.oid::regclass AS part, k.conname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
        WHERE i.inhparent = '{{.Table}}'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (shard, xid, seq)',
            p.part, p.conname, p.conname);
    END LOOP;
END
$$;
