-- A lease on a cursor, so that one LogRelay at a time delivers from it, also across
-- processes that share the file: the relay that holds it is lease_owner until
-- lease_until (Unix microseconds). A relay takes it, in a write of its own, only when
-- it has something to deliver and its lease is not fresh; the commit that moves the
-- cursor renews it in the same UPDATE. A plain LogCursor ignores it. NULL: no lease.
ALTER TABLE outbox_log_cursors ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox_log_cursors ADD COLUMN lease_until INTEGER;
