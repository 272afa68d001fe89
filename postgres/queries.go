package postgres

import "strings"

// The store's SQL, in plain sight. Parameters are named (@now, @owner, …; pgx.NamedArgs).
// {{table}} stands for the quoted, schema-qualified table; a few statements come in two
// variants, chosen once in New: with or without a user filter ({{and_user}}: per-user
// processors), and with or without NOTIFY ({{notify}}: Config.DisableNotify); the claim
// also with or without a filter of types ({{and_types}}) and of skipped types
// ({{and_skip}}, chosen at claim time, when the processor holds some types back). The
// variants are separate statements rather than "(@user_id = '' OR …)" so that a cached
// generic plan can never trade the partial index for a scan.

const eventColumns = `seq, id, type, entity_id, user_id, status, attempts, max_attempts, priority,
	is_new_record, metadata, payload, ordering_key, created_at, updated_at, last_attempt_at,
	next_attempt_at, completed_at, last_error, errors, lease_owner, lease_expires_at`

// notifyUsers sends one notification per returned row; PostgreSQL folds identical
// ones of a transaction into one and delivers them when the transaction commits.
const notifyUsers = `CROSS JOIN LATERAL pg_notify(@channel, r.user_id)`

// notifyAfterCommit is the NOTIFY the store sends after its own commits, one per user.
// Its transaction commits without waiting for the WAL flush (synchronous_commit off
// for it alone): a wake-up needs no durability, and PostgreSQL holds its cluster-wide
// notification lock until the commit is done, so a flush would make every other
// notifying commit queue behind this one.
const notifyAfterCommit = `SELECT pg_notify(@channel, u)
FROM set_config('synchronous_commit', 'off', true) AS c, unnest(@users::text[]) AS u`

// notifyVisible is the watcher's look (see watch.go): which of the given seqs have
// committed, and a NOTIFY for their users, in one statement outside any caller's
// transaction. The primary key finds them; an invisible seq (not committed yet, or
// rolled back) returns nothing.
const notifyVisible = `
WITH v AS MATERIALIZED (SELECT seq, user_id FROM {{table}} WHERE seq = ANY(@seqs::bigint[])),
n AS (SELECT count(pg_notify(@channel, u.user_id)) AS sent
      FROM set_config('synchronous_commit', 'off', true) AS c, (SELECT DISTINCT user_id FROM v) u)
SELECT v.seq, v.user_id FROM v, n WHERE n.sent >= 0`

// insertEvent writes one event. Metadata and payload travel as text and are cast here,
// so that what the caller wrote is what the column holds.
const insertEvent = `
WITH r AS (
    INSERT INTO {{table}} (id, type, entity_id, user_id, status, max_attempts, priority,
        is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
    VALUES (@id, @type, @entity_id, @user_id, 'pending', @max_attempts, @priority,
        @is_new_record, @metadata::text::jsonb, @payload::text::json, @ordering_key, @now, @now, @now)
    RETURNING id, seq, user_id)
SELECT r.id, r.seq FROM r {{notify}}`

// insertOne is insertEvent without NOTIFY, as most single enqueues run: a bare INSERT
// with positional parameters, which PostgreSQL runs without the CTE's materialization
// and pgx binds without rewriting named arguments. Parameters: id, type, entity_id,
// user_id, max_attempts, priority, is_new_record, metadata, payload, ordering_key, now.
const insertOne = `
INSERT INTO {{table}} (id, type, entity_id, user_id, status, max_attempts, priority,
    is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8::text::jsonb, $9::text::json, $10, $11, $11, $11)
RETURNING seq`

// insertEvents writes a batch in one statement: one array per column, in the order given.
const insertEvents = `
WITH r AS (
    INSERT INTO {{table}} (id, type, entity_id, user_id, status, max_attempts, priority,
        is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
    SELECT e.id, e.type, e.entity_id, e.user_id, 'pending', e.max_attempts, e.priority,
        e.is_new_record, e.metadata::jsonb, e.payload::json, e.ordering_key, @now, @now, @now
    FROM unnest(@ids::uuid[], @types::text[], @entity_ids::text[], @user_ids::text[],
                @max_attempts::integer[], @priorities::integer[], @is_new_records::boolean[],
                @metadata::text[], @payloads::text[], @ordering_keys::text[])
         WITH ORDINALITY AS e(id, type, entity_id, user_id, max_attempts, priority,
                              is_new_record, metadata, payload, ordering_key, ord)
    ORDER BY e.ord
    RETURNING id, seq, user_id)
SELECT r.id, r.seq FROM r {{notify}}`

// isHead is true when e may be delivered now as far as its ordering key is concerned:
// it has no key, or no earlier event of its key is unfinished (given-up ones aside
// with @skip_given_up) and no other event of its key is in flight. The second half
// covers an earlier-seq event whose transaction committed after a later one was
// claimed. The check reads the statement's snapshot, so two claimers with different
// snapshots could still each see a different head; the unique index key_in_flight
// settles that race (see Claim).
const isHead = `(e.ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM {{table}} h
        WHERE h.ordering_key = e.ordering_key AND h.status <> 'completed' AND h.seq <> e.seq
          AND (h.status = 'processing'
               OR (h.seq < e.seq AND NOT (@skip_given_up AND h.status = 'failed' AND h.next_attempt_at IS NULL)))))`

// attemptsLeft is true when e may be attempted once more.
const attemptsLeft = `e.attempts < (CASE WHEN e.max_attempts > 0 THEN e.max_attempts ELSE @default_max END)`

// served narrows a source of the claim to the events the claim serves: those of its
// user and types (when scoped), not of the types it holds back ({{and_skip}}), and not
// of a paused type. The give-up step reads it too, so that a claim never gives up an
// event it would not deliver.
const served = `{{and_user}} {{and_types}} {{and_skip}} AND NOT EXISTS (SELECT 1 FROM {{paused}} p WHERE p.type = e.type)`

// leaseLost is the error recorded for an attempt whose processor never reported back.
const leaseLost = `'lease of ' || coalesce(t.lease_owner, '?') || ' expired before it recorded an outcome'`

// claimEvents leases up to @limit due events in one statement. Each source of due
// events (pending, due retries, expired leases) is read from its own partial index in
// delivery order and locked with SKIP LOCKED, so that concurrent claimers pass over
// each other's rows instead of queueing; the best @limit of them are leased. An
// expired lease counts as a failed attempt, recorded in the event's history; when the
// event has no attempts left it is given up instead (given_up), if the claim serves it
// (served: a relay scoped to other types, or holding this one back, leaves it alone). A
// processor scoped to types ({{and_types}}) reads the same indexes and skips other
// types' rows; a paused type's rows are skipped by a lookup in the paused table (a
// handful of rows), and held-back types ({{and_skip}}) by a test against the array.
// Either way a skipped row costs a heap visit, so a claim behind a large backlog of
// skipped types pays for it: docs/adopting.md gives the measured cost.
//
// The claim commits without waiting for its WAL flush (synchronous_commit off for
// this statement's transaction alone; the WAL writer flushes it within a few hundred
// milliseconds): delivery waits for the claim, and a flush on a busy disk took up to
// 100 ms of a wake-up's latency (bench/). A claim lost with the
// server's last moments of WAL leaves its events as they were before it, due again:
// they are delivered again, which at-least-once allows, and the lost attempt is not
// counted. Settle, Retry and the rest keep the server's durability.
//
// The paused types are an anti-join (NOT EXISTS), not "type <> ALL(ARRAY(…))": with
// few distinct types the planner took the latter to leave about one row, and so
// costed the claim as a scan of the whole backlog (349,000 at 45,000 pending). Above
// jit_above_cost (100,000) PostgreSQL then compiled the statement with JIT on every
// claim: 0.1 to 1.5 s a claim of 1,000 on a loaded machine, against 13 to 23 ms
// without (bench/, docs/performance.md). The anti-join is estimated from the paused
// table's statistics, which the store keeps current (migration 003, PauseType).
const claimEvents = `
WITH pending AS (
    SELECT e.seq, e.priority FROM {{table}} e
    WHERE e.status = 'pending' ` + served + ` AND ` + isHead + `
    ORDER BY e.priority DESC, e.seq
    LIMIT @limit
    FOR UPDATE SKIP LOCKED
), retrying AS (
    SELECT e.seq, e.priority FROM {{table}} e
    WHERE e.status = 'failed' AND e.next_attempt_at <= @now ` + served + ` AND ` + isHead + `
    ORDER BY e.priority DESC, e.seq
    LIMIT @limit
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT e.seq, e.priority FROM {{table}} e
    WHERE e.status = 'processing' AND e.lease_expires_at <= @now ` + served + ` AND ` + attemptsLeft + `
    ORDER BY e.priority DESC, e.seq
    LIMIT @limit
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT seq FROM (SELECT * FROM pending UNION ALL SELECT * FROM retrying UNION ALL SELECT * FROM expired) c
    ORDER BY priority DESC, seq
    LIMIT @limit
), given_up AS (
    UPDATE {{table}} t
    SET status           = 'failed',
        next_attempt_at  = NULL,
        last_error       = ` + leaseLost + `,
        errors           = coalesce(t.errors, '[]') || jsonb_build_array(jsonb_build_object(
                               'attempt', jsonb_array_length(coalesce(t.errors, '[]')) + 1, 'at', @now_us::bigint, 'error', ` + leaseLost + `)),
        lease_owner      = NULL,
        lease_expires_at = NULL,
        updated_at       = @now
    WHERE t.seq = ANY(ARRAY(
        SELECT e.seq FROM {{table}} e
        WHERE e.status = 'processing' AND e.lease_expires_at <= @now ` + served + ` AND NOT ` + attemptsLeft + `
        FOR UPDATE SKIP LOCKED))
), claimed AS (
    UPDATE {{table}} t
    SET status           = 'processing',
        attempts         = t.attempts + 1,
        last_attempt_at  = @now,
        lease_owner      = @owner,
        lease_expires_at = @lease_until,
        updated_at       = @now,
        last_error       = CASE WHEN t.status = 'processing' THEN ` + leaseLost + ` ELSE t.last_error END,
        errors           = CASE WHEN t.status = 'processing'
                                THEN coalesce(t.errors, '[]') || jsonb_build_array(jsonb_build_object(
                                         'attempt', jsonb_array_length(coalesce(t.errors, '[]')) + 1, 'at', @now_us::bigint, 'error', ` + leaseLost + `))
                                ELSE t.errors END
    WHERE t.seq = ANY(ARRAY(SELECT seq FROM picked))
    RETURNING t.*
)
SELECT ` + eventColumns + ` FROM claimed, set_config('synchronous_commit', 'off', true) AS c
ORDER BY priority DESC, seq`

const extendLease = `
UPDATE {{table}} SET lease_expires_at = @until
WHERE id = ANY(@ids::uuid[]) AND status = 'processing' AND lease_owner = @owner
RETURNING id`

// settleEvents records a batch of outcomes in one statement (and so one transaction).
// IDs are joined from unnest rather than matched with = ANY: under a generic plan,
// which PostgreSQL adopts for a statement run many times, = ANY searched the array row
// by row (2.0 ms per 1,000 events against 0.45 ms for the join, measured in bench/).
// It records completions, failures with their own error and retry time (NULL gives
// up), and releases of claims whose attempt did not start or does not count (the
// attempt is not counted, and the event is due as before; a non-empty reason in
// @released_errors becomes last_error, without an entry in the history, and an empty
// one keeps last_error). Only events @owner still holds are touched.
//
// Like the claim, it commits without waiting for its WAL flush: a processor settles a
// batch before it claims the next, so a slow flush held up the next event's delivery
// (bench/: up to 90 ms at p99 on a shared disk). Outcomes lost with the server's last
// moments of WAL leave their events leased, so they are delivered again once the lease
// expires: at-least-once, as after a relay's crash.
const settleEvents = `
WITH completed AS (
    UPDATE {{table}} t
    SET status = 'completed', completed_at = @now, next_attempt_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = @now
    FROM unnest(@delivered::uuid[]) AS d(id)
    WHERE t.id = d.id AND t.status = 'processing' AND t.lease_owner = @owner
    RETURNING 1
), failed AS (
    UPDATE {{table}} t
    SET status = 'failed', next_attempt_at = f.next_attempt_at, last_error = f.error,
        errors = coalesce(t.errors, '[]') || jsonb_build_array(jsonb_build_object(
                     'attempt', jsonb_array_length(coalesce(t.errors, '[]')) + 1, 'at', @now_us::bigint, 'error', f.error)),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = @now
    FROM unnest(@failed::uuid[], @errors::text[], @next_attempts::timestamptz[]) AS f(id, error, next_attempt_at)
    WHERE t.id = f.id AND t.status = 'processing' AND t.lease_owner = @owner
    RETURNING 1
), r AS (
    UPDATE {{table}} t
    SET status = CASE WHEN t.attempts > 1 THEN 'failed' ELSE 'pending' END,
        attempts = t.attempts - 1,
        next_attempt_at = coalesce(t.next_attempt_at, @now),
        last_error = coalesce(nullif(d.error, ''), t.last_error),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = @now
    FROM unnest(@released::uuid[], @released_errors::text[]) AS d(id, error)
    WHERE t.id = d.id AND t.status = 'processing' AND t.lease_owner = @owner
    RETURNING t.user_id
)
SELECT (SELECT count(*) FROM completed), (SELECT count(*) FROM failed),
       (SELECT count(*) FROM (SELECT DISTINCT user_id FROM r) r {{notify}})
FROM set_config('synchronous_commit', 'off', true) AS c`

const getEvent = `SELECT ` + eventColumns + ` FROM {{table}} WHERE id = @id`

// filterWhere is shared by List and Retry; unset filters match everything. These
// statements run with a plan made for their arguments (QueryExecModeExec), so the
// unset filters fold away and the planner picks the index of the status asked for.
const filterWhere = `
    (@all_ids OR id = ANY(@ids::uuid[]))
AND (@status = '' OR status = @status)
AND (NOT @given_up OR (status = 'failed' AND next_attempt_at IS NULL))
AND (@due_before::timestamptz IS NULL
     OR ((status = 'pending' OR status = 'failed') AND next_attempt_at < @due_before))
AND (@stuck_at::timestamptz IS NULL OR (status = 'processing' AND lease_expires_at <= @stuck_at))
AND (NOT @blocked OR (ordering_key IS NOT NULL AND (status = 'pending' OR status = 'failed')
     AND next_attempt_at IS NOT NULL
     AND EXISTS (SELECT 1 FROM {{table}} g
                 WHERE g.ordering_key = {{table}}.ordering_key AND g.seq < {{table}}.seq
                   AND g.status = 'failed' AND g.next_attempt_at IS NULL)))
AND (@type = '' OR type = @type)
AND (@user_id = '' OR user_id = @user_id)
AND seq > @after_seq`

const listEvents = `SELECT ` + eventColumns + ` FROM {{table}} WHERE ` + filterWhere + `
ORDER BY seq LIMIT @limit`

// listActive is List for filters that only match events not completed (a status
// other than completed, given up, stale). It collects them from their partial indexes
// first, so that the planner cannot choose to walk the table in seq order past the
// completed events, which are most of it and come first.
const listActive = `
WITH matched AS MATERIALIZED (
    SELECT seq FROM {{table}}
    WHERE (status = 'pending' OR status = 'processing' OR status = 'failed') AND ` + filterWhere + `
)
SELECT ` + eventColumns + ` FROM {{table}}
WHERE seq = ANY(ARRAY(SELECT seq FROM matched ORDER BY seq LIMIT @limit))
ORDER BY seq`

const retryEvents = `
WITH r AS (
    UPDATE {{table}}
    SET status = 'pending', attempts = 0, next_attempt_at = @now, completed_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = @now
    WHERE ` + filterWhere + `
      AND status <> 'completed'
      AND NOT (status = 'processing' AND lease_expires_at > @now)
    RETURNING user_id
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM (SELECT DISTINCT user_id FROM r) r {{notify}})`

const updateEvent = `
WITH r AS (
    UPDATE {{table}}
    SET status = @status, attempts = @attempts, max_attempts = @max_attempts, priority = @priority,
        metadata = @metadata::text::jsonb, next_attempt_at = @next_attempt_at, completed_at = @completed_at,
        last_error = @last_error, lease_owner = NULL, lease_expires_at = NULL, updated_at = @now
    WHERE id = @id AND NOT (status = 'processing' AND lease_expires_at > @now)
    RETURNING user_id
)
SELECT count(*) FROM r {{notify}}`

const deleteEvents = `DELETE FROM {{table}} WHERE id = ANY(@ids::uuid[])`

// deleteCompleted removes one bounded batch, oldest first, through the completed
// index; each batch is its own short transaction.
const deleteCompleted = `
DELETE FROM {{table}} WHERE seq = ANY(ARRAY(
    SELECT seq FROM {{table}}
    WHERE status = 'completed' AND completed_at < @before
    ORDER BY completed_at
    LIMIT @limit
    FOR UPDATE SKIP LOCKED))`

// countActive counts the events that are not completed, each state from its own
// partial index.
const countActive = `
SELECT type, 'pending', false, count(*) FROM {{table}}
WHERE status = 'pending' AND (@user_id = '' OR user_id = @user_id) GROUP BY type
UNION ALL
SELECT type, 'processing', false, count(*) FROM {{table}}
WHERE status = 'processing' AND (@user_id = '' OR user_id = @user_id) GROUP BY type
UNION ALL
SELECT type, 'failed', next_attempt_at IS NULL, count(*) FROM {{table}}
WHERE status = 'failed' AND (@user_id = '' OR user_id = @user_id) GROUP BY type, next_attempt_at IS NULL`

// countCompleted reads only the completed_by_user index.
const countCompleted = `
SELECT type, count(*) FROM {{table}}
WHERE status = 'completed' AND (@user_id = '' OR user_id = @user_id) GROUP BY type`

// countWaiting counts the stale events, finds the oldest waiting one, and since when
// the longest-due one has been due, leaving out the types an operator paused.
const countWaiting = `
SELECT coalesce(sum(stale), 0), min(oldest), min(due_since) FROM (
    SELECT count(*) FILTER (WHERE next_attempt_at < @stale_before) AS stale, min(created_at) AS oldest,
           min(next_attempt_at) AS due_since
    FROM {{table}} e WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND (@user_id = '' OR user_id = @user_id)
      AND e.type <> ALL(ARRAY(SELECT type FROM {{paused}}))
    UNION ALL
    SELECT count(*) FILTER (WHERE next_attempt_at < @stale_before), min(created_at),
           min(next_attempt_at) FILTER (WHERE next_attempt_at <= @now)
    FROM {{table}} e WHERE status = 'failed' AND next_attempt_at IS NOT NULL AND (@user_id = '' OR user_id = @user_id)
      AND e.type <> ALL(ARRAY(SELECT type FROM {{paused}}))
) w`

// countStuck counts the events held under a lease that has expired (their processor is
// gone) and finds the earliest expiry, from the leased index.
const countStuck = `
SELECT count(*), min(lease_expires_at) FROM {{table}}
WHERE status = 'processing' AND lease_expires_at <= @now AND (@user_id = '' OR user_id = @user_id)`

// countRecent counts the outcomes recorded since @since, each from the index of its
// time (completed, failed_at), so that the cost follows the events of the window.
const countRecent = `
SELECT c.n, f.retrying, f.given_up FROM
    (SELECT count(*) AS n FROM {{table}}
     WHERE status = 'completed' AND completed_at >= @since AND (@user_id = '' OR user_id = @user_id)) c,
    (SELECT count(*) FILTER (WHERE next_attempt_at IS NOT NULL) AS retrying,
            count(*) FILTER (WHERE next_attempt_at IS NULL) AS given_up
     FROM {{table}}
     WHERE status = 'failed' AND updated_at >= @since AND (@user_id = '' OR user_id = @user_id)) f`

// countBlocked counts waiting events behind a given-up event of the same ordering key,
// starting from the given-up ones (few, and indexed).
const countBlocked = `
SELECT count(DISTINCT e.seq) FROM {{table}} g
JOIN {{table}} e ON e.ordering_key = g.ordering_key AND e.seq > g.seq AND e.status <> 'completed'
WHERE g.status = 'failed' AND g.next_attempt_at IS NULL AND g.ordering_key IS NOT NULL
  AND (e.status = 'pending' OR e.status = 'failed') AND e.next_attempt_at IS NOT NULL
  AND (@user_id = '' OR e.user_id = @user_id)`

// The paused types: a pause keeps its first time.
const (
	pauseType   = `INSERT INTO {{paused}} (type, paused_at) VALUES (@type, @now) ON CONFLICT (type) DO NOTHING`
	resumeType  = `DELETE FROM {{paused}} WHERE type = @type`
	pausedTypes = `SELECT type, paused_at FROM {{paused}} ORDER BY type`
	// analyzePaused keeps the planner's view of the paused types current (see
	// migration 003).
	analyzePaused = `ANALYZE {{paused}}`
)

// queries are the statements of one Store, rendered for its table and settings.
type queries struct {
	insertEvent, insertEvents     string // with NOTIFY, unless disabled
	insertQuiet, insertBatchQuiet string // never: the store notifies after its own commits
	insertQuietNamed              string // insertEvent without NOTIFY, for database/sql
	notifyUsers, notifyVisible    string
	claim                         [2][3][2]string // [by user][all types, one type, several][skipping types]
	pauseType, resumeType         string
	pausedTypes, analyzePaused    string
	extendLease, settleEvents     string
	getEvent, retryEvents         string
	listEvents, listActive        string
	updateEvent, deleteEvents     string
	deleteCompleted               string
	countActive, countCompleted   string
	countWaiting, countBlocked    string
	countStuck, countRecent       string
}

func newQueries(n names, notify bool) queries {
	notifyClause := ""
	if notify {
		notifyClause = notifyUsers
	}
	renderWith := func(sql, userFilter, typeFilter, skipFilter string) string {
		return strings.NewReplacer("{{table}}", n.Table, "{{paused}}", n.Paused, "{{and_user}}", userFilter,
			"{{and_types}}", typeFilter, "{{and_skip}}", skipFilter, "{{notify}}", notifyClause).Replace(sql)
	}
	render := func(sql string, userFilter string) string { return renderWith(sql, userFilter, "", "") }
	quiet := strings.NewReplacer("{{table}}", n.Table, "{{notify}}", "")
	// One type is an equality, so that an index on (type, priority DESC, seq) can hand
	// its events over in delivery order; several need = ANY.
	const byUser, byType, byTypes = "AND e.user_id = @user_id", "AND e.type = @type", "AND e.type = ANY(@types::text[])"
	// Held-back types are usually none, so their filter is a variant of its own, chosen
	// at claim time, and the usual claim stays as it is. It is a containment test, not
	// NOT (e.type = ANY(…)): a generic plan takes an array parameter for ten elements,
	// and with few distinct types estimated that NOT = ANY left about 2 % of the rows,
	// costing the claim at 30 times its plan for the call (TestPlansUseTheIndexes). @>
	// gets its default estimate, so the claim keeps its plan and its cost.
	const skipping = "AND NOT (@skip_types::text[] @> ARRAY[e.type])"
	var claim [2][3][2]string
	for u, userFilter := range []string{"", byUser} {
		for t, typeFilter := range []string{"", byType, byTypes} {
			for k, skipFilter := range []string{"", skipping} {
				claim[u][t][k] = renderWith(claimEvents, userFilter, typeFilter, skipFilter)
			}
		}
	}
	return queries{
		insertEvent:      render(insertEvent, ""),
		insertEvents:     render(insertEvents, ""),
		insertQuiet:      quiet.Replace(insertOne),
		insertQuietNamed: quiet.Replace(insertEvent),
		insertBatchQuiet: quiet.Replace(insertEvents),
		notifyUsers:      notifyAfterCommit,
		notifyVisible:    render(notifyVisible, ""),
		claim:            claim,
		pauseType:        render(pauseType, ""),
		resumeType:       render(resumeType, ""),
		pausedTypes:      render(pausedTypes, ""),
		analyzePaused:    render(analyzePaused, ""),
		extendLease:      render(extendLease, ""),
		settleEvents:     render(settleEvents, ""),
		getEvent:         render(getEvent, ""),
		listEvents:       render(listEvents, ""),
		listActive:       render(listActive, ""),
		retryEvents:      render(retryEvents, ""),
		updateEvent:      render(updateEvent, ""),
		deleteEvents:     render(deleteEvents, ""),
		deleteCompleted:  render(deleteCompleted, ""),
		countActive:      render(countActive, ""),
		countCompleted:   render(countCompleted, ""),
		countWaiting:     render(countWaiting, ""),
		countBlocked:     render(countBlocked, ""),
		countStuck:       render(countStuck, ""),
		countRecent:      render(countRecent, ""),
	}
}
