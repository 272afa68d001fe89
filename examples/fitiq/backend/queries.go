package backend

// The backend's SQL, in plain sight. Parameters are positional ($1, …), which both
// PostgreSQL and SQLite (modernc) read, so one set of statements serves both.

const recordColumns = `backend_id, kind, client_id, version, type, occurred_at, data, created_at, updated_at`

// insertRecord returns nothing when the (user, kind, client ID) exists: a replay.
const insertRecord = `
INSERT INTO records (backend_id, user_id, kind, client_id, version, type, occurred_at, data, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (user_id, kind, client_id) DO NOTHING
RETURNING backend_id`

// updateRecord writes a version newer than the stored one; a replayed delivery (the
// same version again, or an older one) matches no row and leaves the stored data as is.
const updateRecord = `
UPDATE records
SET version = $4, type = $5, occurred_at = $6, data = $7, updated_at = $8
WHERE user_id = $1 AND kind = $2 AND client_id = $3 AND version < $4
RETURNING ` + recordColumns

const selectRecord = `SELECT ` + recordColumns + ` FROM records WHERE user_id = $1 AND kind = $2 AND client_id = $3`

const historyWhere = `
WHERE user_id = $1 AND kind = $2 AND ($3 = '' OR type = $3) AND occurred_at >= $4 AND occurred_at <= $5`

const countHistory = `SELECT count(*) FROM records` + historyWhere

const selectHistory = `SELECT ` + recordColumns + ` FROM records` + historyWhere + `
ORDER BY occurred_at DESC, client_id
LIMIT $6 OFFSET $7`

const countRecords = `
SELECT kind, count(*), count(DISTINCT client_id) FROM records
WHERE ($1 = '' OR user_id = $1)
GROUP BY kind`

const insertToken = `
INSERT INTO api_tokens (token_sha256, user_id, created_at) VALUES ($1, $2, $3)
ON CONFLICT (token_sha256) DO NOTHING`

const selectTokenUser = `SELECT user_id FROM api_tokens WHERE token_sha256 = $1`
