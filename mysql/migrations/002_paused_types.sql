-- Event types an operator has paused: no relay on this table claims their events until
-- the type is resumed. A handful of rows at most, read by every claim.
CREATE TABLE {{.Paused}} (
    type      VARCHAR(255) NOT NULL PRIMARY KEY,
    paused_at BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
