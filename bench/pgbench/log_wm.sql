BEGIN;
INSERT INTO bench_pgbench_log.orders (id, user_id, amount) VALUES (gen_random_uuid(), 'user-1', 42);
INSERT INTO bench_pgbench_log.wm (uuid, payload, metadata, transaction_id)
    VALUES (gen_random_uuid()::text, '{"order_id":"x","amount":42,"currency":"EUR"}', '{}', pg_current_xact_id());
COMMIT;
