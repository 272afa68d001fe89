-- One row per message whose effect was committed. recorded_at (Unix microseconds) is
-- the later of the processing time and the message's own time; cleanup deletes by it.
-- WITHOUT ROWID: the ID is the table's only B-tree key, so a message costs one insert
-- into it and one into the cleanup index.
CREATE TABLE {{.Table}} (
    id          TEXT    NOT NULL PRIMARY KEY,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX {{.Index}} ON {{.Table}} (recorded_at);
