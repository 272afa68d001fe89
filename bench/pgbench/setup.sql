-- Tables for the pgbench scripts beside this file, in the harness's database, after
-- `go run . -phases enqueue -systems plain,outbox -count 1 -keep` has left the plain and
-- outbox schemas there. Only bench_pgbench is created here; drop it when done.
DROP SCHEMA IF EXISTS bench_pgbench CASCADE;
CREATE SCHEMA bench_pgbench;
-- The outbox row without its secondary indexes: primary key (seq) only.
CREATE TABLE bench_pgbench.outbox_pk_only (LIKE bench_outbox.outbox_events INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE bench_pgbench.outbox_pk_only ADD PRIMARY KEY (seq);
-- A narrow event row: key, id, payload.
CREATE TABLE bench_pgbench.narrow (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id uuid NOT NULL, payload json);
