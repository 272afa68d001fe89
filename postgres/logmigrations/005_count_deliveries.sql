-- What the log's relays delivered, per cursor row (a shard's cursor is "<name>/<shard>")
-- and minute of the relay's clock: an event delivered from the log leaves no row behind,
-- so the outbox's window of recent outcomes (Stats.Recent) reads the log's successes
-- here (Log.Delivered). A relay adds its step's deliveries in the statement that moves
-- its cursor, so a count is committed exactly with the acknowledgement it belongs to.
--
-- The key leads with the minute, so that a window's sum and retention's delete are
-- ranges of it; no two relays write the same row, since a cursor row is delivered by
-- one relay at a time. Each step updates its minute's row: a fillfactor of 50 leaves
-- room on the page for those updates to stay heap-only (no index entry, little WAL).
-- Log.Retain deletes the rows older than LogDeliveredRetention.
CREATE TABLE {{.Delivered}} (
    minute    timestamptz NOT NULL,
    cursor    text        NOT NULL,
    delivered bigint      NOT NULL,
    CONSTRAINT {{.Name "delivered_pkey"}} PRIMARY KEY (minute, cursor)
) WITH (fillfactor = 50);
