-- One row per message whose effect was committed. recorded_at is the later of the
-- processing time and the message's own time; cleanup deletes by it. text, not uuid:
-- an Idempotency-Key may be any string.
CREATE TABLE {{.Table}} (
    id          text        NOT NULL CONSTRAINT {{.Name}}_pkey PRIMARY KEY,
    recorded_at timestamptz NOT NULL
);

CREATE INDEX {{.Index}} ON {{.Table}} (recorded_at);
