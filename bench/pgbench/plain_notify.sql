BEGIN;
INSERT INTO bench_plain.orders (id, user_id, amount) VALUES (gen_random_uuid(), 'user-1', 42);
INSERT INTO bench_plain.events (id, payload) VALUES (gen_random_uuid(), '{"order_id":"x","amount":42,"currency":"EUR"}');
SELECT pg_notify('bench_pgbench', 'user-1');
COMMIT;
