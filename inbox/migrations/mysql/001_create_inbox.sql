-- One row per message whose effect was committed. recorded_at (UTC) is the later of
-- the processing time and the message's own time; cleanup deletes by it. VARBINARY,
-- not VARCHAR: IDs compare byte for byte, so "Ab" and "ab" are two messages whatever
-- the server's default collation.
CREATE TABLE {{.Table}} (
    id          VARBINARY(255) NOT NULL PRIMARY KEY,
    recorded_at DATETIME(6)    NOT NULL,
    INDEX {{.Index}} (recorded_at)
) ENGINE = InnoDB
