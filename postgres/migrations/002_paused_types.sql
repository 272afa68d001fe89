-- Event types an operator has paused: no relay on this table claims their events until
-- the type is resumed. A handful of rows at most, read by every claim.
CREATE TABLE {{.Paused}} (
    type      text        PRIMARY KEY CHECK (type <> ''),
    paused_at timestamptz NOT NULL
);
