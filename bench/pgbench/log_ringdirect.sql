BEGIN;
INSERT INTO bench_pgbench_log.orders (id, user_id, amount) VALUES (gen_random_uuid(), 'user-1', 42);
INSERT INTO bench_pgbench_log.ringcol_p3 (created_at, id, max_attempts, priority, is_new_record, type, entity_id, user_id,
        ordering_key, metadata, payload)
    VALUES (now(), gen_random_uuid(), 0, 0, false, 'orderPlaced', 'x', 'user-1', NULL, NULL,
        '{"order_id":"x","amount":42,"currency":"EUR"}');
COMMIT;
