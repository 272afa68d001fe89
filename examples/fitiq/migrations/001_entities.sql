-- FitIQ's local tables, one per synced kind. They live in the same SQLite file as the
-- outbox, so that an entity and its event commit together. Times are Unix microseconds
-- (UTC). Every table carries the sync bookkeeping: version (1 on create, +1 per save),
-- sync_status (pending, synced, failed) and the backend's ID once it has one.

CREATE TABLE progress_entries (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    quantity    REAL    NOT NULL,
    date        INTEGER NOT NULL,
    notes       TEXT    NOT NULL DEFAULT '',
    version     INTEGER NOT NULL CHECK (version >= 1),
    sync_status TEXT    NOT NULL DEFAULT 'pending' CHECK (sync_status IN ('pending', 'synced', 'failed')),
    backend_id  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- The seed's getProgressHistory(type:from:to:) and the app's charts.
CREATE INDEX progress_entries_user_type_date ON progress_entries (user_id, type, date);

CREATE TABLE physical_attributes (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    attribute   TEXT    NOT NULL,
    value       REAL    NOT NULL,
    measured_at INTEGER NOT NULL,
    notes       TEXT    NOT NULL DEFAULT '',
    version     INTEGER NOT NULL CHECK (version >= 1),
    sync_status TEXT    NOT NULL DEFAULT 'pending' CHECK (sync_status IN ('pending', 'synced', 'failed')),
    backend_id  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX physical_attributes_user_attribute ON physical_attributes (user_id, attribute, measured_at);

CREATE TABLE activity_snapshots (
    id              TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL,
    date            INTEGER NOT NULL,
    steps           INTEGER NOT NULL,
    active_minutes  INTEGER NOT NULL,
    calories_burned REAL    NOT NULL,
    distance_meters REAL    NOT NULL,
    avg_heart_rate  INTEGER NOT NULL DEFAULT 0,
    version         INTEGER NOT NULL CHECK (version >= 1),
    sync_status     TEXT    NOT NULL DEFAULT 'pending' CHECK (sync_status IN ('pending', 'synced', 'failed')),
    backend_id      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX activity_snapshots_user_date ON activity_snapshots (user_id, date);

-- One profile per user: the UNIQUE user_id makes a second "create" impossible, so the
-- use case updates the existing row instead.
CREATE TABLE profile_metadata (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    bio         TEXT    NOT NULL DEFAULT '',
    unit_system TEXT    NOT NULL,
    language    TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    sync_status TEXT    NOT NULL DEFAULT 'pending' CHECK (sync_status IN ('pending', 'synced', 'failed')),
    backend_id  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE profile_physical (
    id             TEXT    PRIMARY KEY,
    user_id        TEXT    NOT NULL UNIQUE,
    biological_sex TEXT    NOT NULL,
    height_cm      REAL    NOT NULL,
    date_of_birth  INTEGER NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    sync_status    TEXT    NOT NULL DEFAULT 'pending' CHECK (sync_status IN ('pending', 'synced', 'failed')),
    backend_id     TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
