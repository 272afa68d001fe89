-- Failures by the time they were recorded, for the health rules' window (Stats.Recent):
-- the failures of the last minutes are counted from this index, however many older
-- events are kept. Completions in the window come from outbox_events_completed.
CREATE INDEX outbox_events_failed_at ON outbox_events (updated_at, next_attempt_at, user_id)
    WHERE status = 'failed';
