-- Event types an operator has paused: no processor of this database claims their
-- events until the type is resumed. A handful of rows at most, read by every claim.
CREATE TABLE outbox_paused_types (
    type      TEXT    PRIMARY KEY CHECK (type <> ''),
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;
