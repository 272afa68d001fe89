\set uid random(1, 1000)
BEGIN;
INSERT INTO bench_outbox.orders (id, user_id, amount) VALUES (gen_random_uuid(), 'user-1', 42);
INSERT INTO bench_outbox.outbox_events (id, type, entity_id, user_id, status, max_attempts, priority,
        is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
    VALUES (gen_random_uuid(), 'orderPlaced', 'x', 'user-' || :uid, 'pending', 0, 0,
        false, NULL, '{"order_id":"x","amount":42,"currency":"EUR"}'::text::json, NULL, now(), now(), now());
COMMIT;
