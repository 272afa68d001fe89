package sqlite

// The store's SQL, in plain sight. Parameters are named (:now, :owner, …); lists of
// IDs travel as one JSON array read with json_each, so one prepared statement serves
// any batch size. Times are Unix microseconds.
//
// A query reaches a partial index only when its WHERE repeats the index's condition
// word for word: that is why some say "status <> 'pending' AND status = 'failed'".

const eventColumns = `seq, id, type, entity_id, user_id, status, attempts, max_attempts, priority,
	is_new_record, metadata, payload, ordering_key, created_at, updated_at, last_attempt_at,
	next_attempt_at, completed_at, last_error, errors, lease_owner, lease_expires_at`

// insertEvent's seq is the rowid, read back with LastInsertId.
const insertEvent = `
INSERT INTO outbox_events (id, type, entity_id, user_id, status, attempts, max_attempts, priority,
	is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
VALUES (:id, :type, :entity_id, :user_id, 'pending', 0, :max_attempts, :priority,
	:is_new_record, :metadata, :payload, :ordering_key, :now, :now, :now)`

// served is true for the events a claim serves: its user (:user_id; empty for all), its
// types (:types, a JSON array; empty for all), not the types it skips (:skip_types, a
// JSON array; empty for none: the processor holds back types whose target is failing),
// and not the paused types.
const served = `(:user_id = '' OR e.user_id = :user_id)
              AND (:types = '' OR e.type IN (SELECT value FROM json_each(:types)))
              AND (:skip_types = '' OR e.type NOT IN (SELECT value FROM json_each(:skip_types)))
              AND e.type NOT IN (SELECT type FROM outbox_paused_types)`

// expireLeases turns events whose lease ran out (their processor died mid-delivery)
// back into due retries, or gives them up when they have no attempts left, recording
// the lost attempt in their history. It touches only the events the claim it runs
// before serves: a processor scoped to other types, or holding this type back, must
// not fail or give up events it would never deliver.
const expireLeases = `
UPDATE outbox_events
SET status           = 'failed',
    next_attempt_at  = CASE WHEN attempts >= (CASE WHEN max_attempts > 0 THEN max_attempts ELSE :default_max END)
                            THEN NULL ELSE :now END,
    last_error       = 'lease of ' || lease_owner || ' expired before it recorded an outcome',
    errors           = json_insert(coalesce(errors, '[]'), '$[#]', json_object(
                           'attempt', json_array_length(coalesce(errors, '[]')) + 1, 'at', :now,
                           'error', 'lease of ' || lease_owner || ' expired before it recorded an outcome')),
    lease_owner      = NULL,
    lease_expires_at = NULL,
    updated_at       = :now
WHERE seq IN (
    SELECT e.seq FROM outbox_events e
    WHERE e.status <> 'pending' AND e.status = 'processing' AND e.lease_expires_at <= :now
      AND ` + served + `)`

// claim leases the due heads in (priority desc, seq) order, whether never attempted
// (pending) or retries whose time has come: an older retry goes before a newer event of
// the same priority. Each half of the union is limited on its own index first. An event
// with an ordering key qualifies only when no earlier event of its key is unfinished
// (:skip_given_up lets given-up ones be passed over). Only the events the claim serves
// qualify (see served): type is read from the pending index, which covers it, and the
// paused table is a handful of rows.
const claim = `
UPDATE outbox_events
SET status           = 'processing',
    attempts         = attempts + 1,
    last_attempt_at  = :now,
    lease_owner      = :owner,
    lease_expires_at = :lease_until,
    updated_at       = :now
WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, priority FROM (
            SELECT e.seq, e.priority FROM outbox_events e
            WHERE e.status = 'pending'
              AND ` + served + `
              AND ` + isHead + `
            ORDER BY e.priority DESC, e.seq
            LIMIT :limit)
        UNION ALL
        SELECT seq, priority FROM (
            SELECT e.seq, e.priority FROM outbox_events e
            WHERE e.status <> 'pending' AND e.status = 'failed' AND e.next_attempt_at <= :now
              AND ` + served + `
              AND ` + isHead + `
            ORDER BY e.priority DESC, e.seq
            LIMIT :limit))
    ORDER BY priority DESC, seq
    LIMIT :limit)
RETURNING ` + eventColumns

const isHead = `(e.ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM outbox_events h
                WHERE h.ordering_key = e.ordering_key AND h.seq < e.seq AND h.status <> 'completed'
                  AND NOT (:skip_given_up AND h.status = 'failed' AND h.next_attempt_at IS NULL)))`

const extendLease = `
UPDATE outbox_events SET lease_expires_at = :until
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'processing' AND lease_owner = :owner
RETURNING id`

const completeEvents = `
UPDATE outbox_events
SET status = 'completed', completed_at = :now, next_attempt_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'processing' AND lease_owner = :owner`

// failEvent records a failed attempt of the event :id (:ids its spellings, see
// jsonIDs: should two rows spell one UUID, the one that holds :id as written); a NULL
// :next_attempt_at gives the event up. The history numbers attempts over the event's
// life (every earlier attempt failed and is in it), so that they go on after an
// operator's retry resets the budget.
const failEvent = `
UPDATE outbox_events
SET status = 'failed', next_attempt_at = :next_attempt_at, last_error = :error,
    errors = json_insert(coalesce(errors, '[]'), '$[#]', json_object(
                 'attempt', json_array_length(coalesce(errors, '[]')) + 1, 'at', :now, 'error', :error)),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE seq = (SELECT seq FROM outbox_events
             WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'processing' AND lease_owner = :owner
             ORDER BY id <> :id LIMIT 1)`

// releaseEvents undoes claims whose delivery never started or did not count: the
// attempt is not counted and the event is due as before. :reasons is a JSON object of
// event ID to reason, for the released events that have one: it becomes last_error,
// without an entry in the history (errors); the others keep their last_error.
const releaseEvents = `
UPDATE outbox_events
SET status = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END,
    attempts = attempts - 1,
    last_error = coalesce((SELECT r.value FROM json_each(:reasons) r WHERE r.key = outbox_events.id), last_error),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'processing' AND lease_owner = :owner`

// getEvent finds an event by the spellings of lookupIDs.
const getEvent = `SELECT ` + eventColumns + ` FROM outbox_events WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id <> :id, seq LIMIT 1`

// respellID writes a claimed event's ID in the canonical spelling, unless another
// event's row already holds that spelling.
const respellID = `UPDATE OR IGNORE outbox_events SET id = :id WHERE seq = :seq`

// filterWhere is shared by List and Retry; unset filters match everything.
const filterWhere = `
    (:all_ids OR id IN (SELECT value FROM json_each(:ids)))
AND (:status = '' OR status = :status)
AND (NOT :given_up OR (status = 'failed' AND next_attempt_at IS NULL))
AND (:due_before IS NULL OR (status IN ('pending', 'failed') AND next_attempt_at < :due_before))
AND (:stuck_at IS NULL OR (status = 'processing' AND lease_expires_at <= :stuck_at))
AND (NOT :blocked OR (ordering_key IS NOT NULL AND status IN ('pending', 'failed') AND next_attempt_at IS NOT NULL
     AND EXISTS (SELECT 1 FROM outbox_events g
                 WHERE g.ordering_key = outbox_events.ordering_key AND g.seq < outbox_events.seq
                   AND g.status = 'failed' AND g.next_attempt_at IS NULL)))
AND (:type = '' OR type = :type)
AND (:user_id = '' OR user_id = :user_id)
AND seq > :after_seq`

const listEvents = `SELECT ` + eventColumns + ` FROM outbox_events WHERE ` + filterWhere + `
ORDER BY seq LIMIT :limit`

const retryEvents = `
UPDATE outbox_events
SET status = 'pending', attempts = 0, next_attempt_at = :now, completed_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE ` + filterWhere + `
  AND status <> 'completed'
  AND NOT (status = 'processing' AND lease_expires_at > :now)`

// updateEvent writes the event Get would find.
const updateEvent = `
UPDATE outbox_events
SET status = :status, attempts = :attempts, max_attempts = :max_attempts, priority = :priority,
    metadata = :metadata, next_attempt_at = :next_attempt_at, completed_at = :completed_at,
    last_error = :last_error, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE seq = (SELECT seq FROM outbox_events WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id <> :id, seq LIMIT 1)
  AND NOT (status = 'processing' AND lease_expires_at > :now)`

const deleteEvents = `DELETE FROM outbox_events WHERE id IN (SELECT value FROM json_each(:ids))`

const deleteCompleted = `
DELETE FROM outbox_events WHERE seq IN (
    SELECT seq FROM outbox_events
    WHERE status = 'completed' AND completed_at < :before
    ORDER BY completed_at LIMIT :limit)`

// The counting queries come in two halves, pending and touched, so that each is
// answered from its own partial index without reading the table.

const countByTypeAndStatus = `
SELECT type, status, next_attempt_at IS NULL, count(*) FROM outbox_events
WHERE status <> 'pending' AND (:user_id = '' OR user_id = :user_id)
GROUP BY type, status, next_attempt_at IS NULL
UNION ALL
SELECT type, 'pending', 0, count(*) FROM outbox_events
WHERE status = 'pending' AND (:user_id = '' OR user_id = :user_id)
GROUP BY type`

// countStale counts events due since before :stale_before, and finds since when the
// longest-due pending event and the longest-due retry have been due, leaving out the
// types an operator paused.
const countStale = `
SELECT (SELECT count(*) FROM outbox_events
        WHERE status = 'pending' AND next_attempt_at < :stale_before AND (:user_id = '' OR user_id = :user_id)
          AND type NOT IN (SELECT type FROM outbox_paused_types))
     + (SELECT count(*) FROM outbox_events
        WHERE status <> 'pending' AND status = 'failed' AND next_attempt_at < :stale_before
          AND (:user_id = '' OR user_id = :user_id) AND type NOT IN (SELECT type FROM outbox_paused_types)),
       (SELECT min(next_attempt_at) FROM outbox_events
        WHERE status = 'pending' AND (:user_id = '' OR user_id = :user_id) AND type NOT IN (SELECT type FROM outbox_paused_types)),
       (SELECT min(next_attempt_at) FROM outbox_events
        WHERE status <> 'pending' AND status = 'failed' AND next_attempt_at <= :now
          AND (:user_id = '' OR user_id = :user_id) AND type NOT IN (SELECT type FROM outbox_paused_types))`

// countStuck counts the events held under a lease that has expired (their processor is
// gone), and finds the earliest expiry. Processing events are few: those in flight.
const countStuck = `
SELECT count(*), min(lease_expires_at) FROM outbox_events
WHERE status <> 'pending' AND status = 'processing' AND lease_expires_at <= :now
  AND (:user_id = '' OR user_id = :user_id)`

// countRecent counts the outcomes recorded since :since, each from the index of its
// time, so that the cost follows the events of the window.
const countRecent = `
SELECT (SELECT count(*) FROM outbox_events INDEXED BY outbox_events_completed
        WHERE status = 'completed' AND completed_at >= :since AND (:user_id = '' OR user_id = :user_id)),
       (SELECT count(*) FROM outbox_events INDEXED BY outbox_events_failed_at
        WHERE status = 'failed' AND updated_at >= :since AND next_attempt_at IS NOT NULL
          AND (:user_id = '' OR user_id = :user_id)),
       (SELECT count(*) FROM outbox_events INDEXED BY outbox_events_failed_at
        WHERE status = 'failed' AND updated_at >= :since AND next_attempt_at IS NULL
          AND (:user_id = '' OR user_id = :user_id))`

// The paused types: a pause keeps its first time.
const (
	pauseType   = `INSERT INTO outbox_paused_types (type, paused_at) VALUES (:type, :now) ON CONFLICT (type) DO NOTHING`
	resumeType  = `DELETE FROM outbox_paused_types WHERE type = :type`
	pausedTypes = `SELECT type, paused_at FROM outbox_paused_types ORDER BY type`
)

// oldestWaiting finds when the oldest pending or retrying event of a type not paused
// was created: the lowest seq is the oldest. (min(+seq) keeps SQLite from walking the table in rowid
// order, through every completed event, instead of reading the pending index.)
const oldestWaiting = `
SELECT min(created_at) FROM outbox_events WHERE seq IN (
    SELECT min(+seq) FROM outbox_events WHERE status = 'pending' AND (:user_id = '' OR user_id = :user_id)
      AND type NOT IN (SELECT type FROM outbox_paused_types)
    UNION ALL
    SELECT min(seq) FROM outbox_events
    WHERE status <> 'pending' AND status = 'failed' AND next_attempt_at IS NOT NULL
      AND (:user_id = '' OR user_id = :user_id) AND type NOT IN (SELECT type FROM outbox_paused_types))`

// countBlocked counts waiting events behind a given-up event of the same ordering key.
const countBlocked = `
SELECT count(DISTINCT e.seq) FROM outbox_events g
JOIN outbox_events e ON e.ordering_key = g.ordering_key AND e.seq > g.seq
WHERE g.status <> 'pending' AND g.status = 'failed' AND g.next_attempt_at IS NULL AND g.ordering_key IS NOT NULL
  AND e.ordering_key IS NOT NULL AND e.status <> 'completed'
  AND e.status IN ('pending', 'failed') AND e.next_attempt_at IS NOT NULL
  AND (:user_id = '' OR e.user_id = :user_id)`
