BEGIN;
INSERT INTO bench_pgbench_log.orders (id, user_id, amount) VALUES (gen_random_uuid(), 'user-1', 42);
INSERT INTO bench_pgbench_log.events (id, payload) VALUES (gen_random_uuid(), '{"order_id":"x","amount":42,"currency":"EUR"}');
COMMIT;
