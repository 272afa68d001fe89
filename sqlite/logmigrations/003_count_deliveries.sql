-- What the log's relays delivered, per cursor and minute of the relay's clock (Unix
-- microseconds of the minute's start): an event delivered from the log leaves no row
-- behind, so the outbox's window of recent outcomes (Stats.Recent) reads the log's
-- successes here (Log.Delivered). A relay adds its step's deliveries in the
-- transaction that moves its cursor, so a count is committed exactly with the
-- acknowledgement it belongs to. The key leads with the minute, so that a window's sum
-- and Log.Trim's delete of the rows older than LogDeliveredRetention are ranges of it.
CREATE TABLE outbox_log_delivered (
    minute    INTEGER NOT NULL,
    cursor    TEXT    NOT NULL,
    delivered INTEGER NOT NULL,
    PRIMARY KEY (minute, cursor)
) WITHOUT ROWID;
