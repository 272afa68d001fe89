-- The backend's records: every entity of every user, one row per (user, kind, client ID).
-- The client's entity ID is the idempotency key: the UNIQUE constraint is what makes a
-- replayed create a 409 instead of a second row. Times are Unix microseconds (UTC), as
-- on SQLite, so that one set of queries serves both.
CREATE TABLE records (
    backend_id  TEXT   PRIMARY KEY,
    user_id     TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    client_id   TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    type        TEXT   NOT NULL DEFAULT '',
    occurred_at BIGINT NOT NULL,
    data        JSONB  NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (user_id, kind, client_id)
);

-- The history query: one user's kind, optionally one type, by date.
CREATE INDEX records_history ON records (user_id, kind, type, occurred_at);

-- Bearer tokens, kept as SHA-256 digests: a stolen database does not hand out tokens.
CREATE TABLE api_tokens (
    token_sha256 TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);
