package mysql

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// The store's SQL, in plain sight. Parameters are named (:now, :owner, …) and bound
// to the driver's "?" by bind; a list argument (:ids, :seqs) expands to one
// placeholder per element. {{table}} stands for the quoted table, {{paused}} for the
// paused types' table, {{and_user}} and {{and_types}} for the optional filters of a
// processor scoped to a user or to types, {{and_skip}} for the types a processor holds
// back (their target is failing; usually none), all filled in once in New; a claim
// picks its variant. Times are Unix microseconds.

const eventColumns = `seq, id, type, entity_id, user_id, status, attempts, max_attempts, priority,
	is_new_record, metadata, payload, ordering_key, created_at, updated_at, last_attempt_at,
	next_attempt_at, completed_at, last_error, errors, lease_owner, lease_expires_at`

const insertColumns = `INSERT INTO {{table}} (id, type, entity_id, user_id, status, max_attempts, priority,
	is_new_record, metadata, payload, ordering_key, created_at, updated_at, next_attempt_at)
VALUES `

// insertRow is one row of an insert; a batch repeats it, comma-separated.
const insertRow = `(?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// seqsOf reads back the seqs of a batch: the driver reports only the first.
const seqsOf = `SELECT id, seq FROM {{table}} WHERE id IN (:ids)`

// isHead is true when e may be delivered now as far as its ordering key is concerned:
// it has no key, or no other event of its key is in flight (one lookup in the unique
// key_in_flight index) and no earlier event of its key is unfinished (given-up ones
// aside with :skip_given_up; the open_key index, read from the key's first entry, so
// that a long backlog behind e costs nothing). Inside a locking read the subqueries'
// rows are neither locked nor skipped, on MySQL and MariaDB alike: they read the
// statement's snapshot, and key_in_flight settles what two claimers with different
// snapshots disagree on.
const isHead = `(e.ordering_key IS NULL OR (
        NOT EXISTS (SELECT 1 FROM {{table}} f WHERE f.key_in_flight = e.ordering_key AND f.seq <> e.seq)
    AND NOT EXISTS (
        SELECT 1 FROM {{table}} h
        WHERE h.open_key = e.ordering_key AND h.seq < e.seq
          AND NOT (:skip_given_up AND h.status = 'failed' AND h.next_attempt_at IS NULL))))`

// expiredLeases locks events whose lease ran out (their processor died mid-delivery)
// and says which have an attempt left; the others are given up. Like the other reads
// of a claim it sees only the events the claim serves (its user and types, not the
// held-back or paused types), so that a claim never gives up an event it would not
// deliver.
const expiredLeases = `
SELECT e.seq, e.priority, e.attempts < (CASE WHEN e.max_attempts > 0 THEN e.max_attempts ELSE :default_max END)
FROM {{table}} e
WHERE e.status = 'processing' AND e.state_at <= :now {{and_user}} {{and_types}} {{and_skip}} AND e.type NOT IN (SELECT type FROM {{paused}})
ORDER BY e.state_at
LIMIT :limit
FOR UPDATE SKIP LOCKED`

// pendingHeads locks the never-attempted events to claim, in delivery order, passing
// over rows that other claimers hold.
const pendingHeads = `
SELECT e.seq, e.priority FROM {{table}} e
WHERE e.status = 'pending' {{and_user}} {{and_types}} {{and_skip}} AND e.type NOT IN (SELECT type FROM {{paused}}) AND ` + isHead + `
ORDER BY e.neg_priority, e.seq
LIMIT :limit
FOR UPDATE SKIP LOCKED`

// retryHeads locks the failed events whose retry time has come.
const retryHeads = `
SELECT e.seq, e.priority FROM {{table}} e
WHERE e.status = 'failed' AND e.state_at <= :now {{and_user}} {{and_types}} {{and_skip}} AND e.type NOT IN (SELECT type FROM {{paused}}) AND ` + isHead + `
ORDER BY e.neg_priority, e.seq
LIMIT :limit
FOR UPDATE SKIP LOCKED`

// leaseLost is the error recorded for an attempt whose processor never reported back.
const leaseLost = `CONCAT('lease of ', COALESCE(lease_owner, '?'), ' expired before it recorded an outcome')`

// appendError is the errors column with one more entry, numbered over the event's
// whole life: one more than the entries already there (attempts restarts at zero when
// an operator retries the event; the history does not). MySQL assigns an UPDATE's
// columns left to right, each seeing the ones before, and MariaDB does too unless
// sql_mode has SIMULTANEOUS_ASSIGNMENT: every statement below reads a column only
// before assigning it (errors and last_error before status), so that both read the
// old values.
func appendError(message string) string {
	return `JSON_ARRAY_APPEND(COALESCE(errors, JSON_ARRAY()), '$', JSON_OBJECT(
	'attempt', JSON_LENGTH(COALESCE(errors, JSON_ARRAY())) + 1, 'at', :now, 'error', ` + message + `))`
}

// giveUp records the lost attempt of expired leases with no attempts left.
var giveUp = `
UPDATE {{table}}
SET last_error       = ` + leaseLost + `,
    errors           = ` + appendError(leaseLost) + `,
    next_attempt_at  = NULL,
    lease_owner      = NULL,
    lease_expires_at = NULL,
    updated_at       = :now,
    status           = 'failed'
WHERE seq IN (:seqs)`

// claimEvents leases the picked events. An expired lease counts as a failed attempt,
// recorded in the event's history.
var claimEvents = `
UPDATE {{table}}
SET last_error       = IF(status = 'processing', ` + leaseLost + `, last_error),
    errors           = IF(status = 'processing', ` + appendError(leaseLost) + `, errors),
    attempts         = attempts + 1,
    last_attempt_at  = :now,
    lease_owner      = :owner,
    lease_expires_at = :lease_until,
    updated_at       = :now,
    status           = 'processing'
WHERE seq IN (:seqs)`

const eventsBySeq = `SELECT ` + eventColumns + ` FROM {{table}} WHERE seq IN (:seqs) ORDER BY neg_priority, seq`

const heldByOwner = `
SELECT seq, id FROM {{table}}
WHERE id IN (:ids) AND status = 'processing' AND lease_owner = :owner
FOR UPDATE`

const extendLease = `UPDATE {{table}} SET lease_expires_at = :until WHERE seq IN (:seqs)`

const completeEvents = `
UPDATE {{table}}
SET completed_at = :now, next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = :now, status = 'completed'
WHERE id IN (:ids) AND status = 'processing' AND lease_owner = :owner`

// failEvents records failed attempts, each with its own error and retry time (NULL
// gives the event up): :errors and :next_attempts are CASEs on the event ID.
var failEvents = `
UPDATE {{table}}
SET last_error = :errors, errors = ` + appendError(":errors") + `,
    next_attempt_at = :next_attempts, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = :now, status = 'failed'
WHERE id IN (:ids) AND status = 'processing' AND lease_owner = :owner`

// releaseEvents undoes claims whose delivery never started or did not count: the
// attempt is not counted, and the event is due as before.
const releaseEvents = `
UPDATE {{table}}
SET status = IF(attempts > 1, 'failed', 'pending'),
    attempts = attempts - 1,
    next_attempt_at = COALESCE(next_attempt_at, :now),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id IN (:ids) AND status = 'processing' AND lease_owner = :owner`

// releaseWithReasons is releaseEvents for a batch in which some released events have
// a reason: :reasons is a CASE on the event ID over those only, so that the reason
// becomes last_error (without an entry in the history) and the others (NULL) keep
// theirs.
const releaseWithReasons = `
UPDATE {{table}}
SET status = IF(attempts > 1, 'failed', 'pending'),
    attempts = attempts - 1,
    next_attempt_at = COALESCE(next_attempt_at, :now),
    last_error = COALESCE(:reasons, last_error),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id IN (:ids) AND status = 'processing' AND lease_owner = :owner`

const getEvent = `SELECT ` + eventColumns + ` FROM {{table}} WHERE id = :id`

// retryable locks the events a Retry resets: {{filter}} is the operator's filter.
const retryable = `
SELECT seq FROM {{table}}
WHERE {{filter}} AND status <> 'completed' AND NOT (status = 'processing' AND lease_expires_at > :now)
FOR UPDATE`

const retryEvents = `
UPDATE {{table}}
SET attempts = 0, next_attempt_at = :now, completed_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, status = 'pending'
WHERE seq IN (:seqs)`

// lockForUpdate reads the lease of the event Update is about to write.
const lockForUpdate = `SELECT status, lease_expires_at FROM {{table}} WHERE id = :id FOR UPDATE`

const updateEvent = `
UPDATE {{table}}
SET status = :status, attempts = :attempts, max_attempts = :max_attempts, priority = :priority,
    metadata = :metadata, next_attempt_at = :next_attempt_at, completed_at = :completed_at,
    last_error = :last_error, lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id`

const deleteEvents = `DELETE FROM {{table}} WHERE id IN (:ids)`

// deleteCompleted removes one bounded batch, oldest first, through the due index.
const deleteCompleted = `
DELETE FROM {{table}}
WHERE status = 'completed' AND state_at < :before
ORDER BY state_at
LIMIT :limit`

// countActive counts the events that are not completed, and finds the oldest waiting
// one, the stale and the stuck ones, and since when the longest-due one has been due
// (a pending event since it became due, a retry since its time came, a stuck one
// since its lease expired), from the counts index alone: state_at is next_attempt_at
// for pending and failed events and lease_expires_at for processing ones. Stats
// leaves out the rows of paused types where it should.
const countActive = `
SELECT type, status, state_at IS NULL, COUNT(*), MIN(created_at),
       COALESCE(SUM(status <> 'processing' AND state_at < :stale_before), 0),
       COALESCE(SUM(status = 'processing' AND state_at <= :now), 0),
       MIN(CASE WHEN status = 'pending' OR state_at <= :now THEN state_at END)
FROM {{table}} e
WHERE e.status IN ('pending', 'processing', 'failed') {{and_user}}
GROUP BY type, status, state_at IS NULL`

// countRecent counts the outcomes recorded since :since, each from an index on its
// time, so that the cost follows the events of the window however many older ones are
// kept: completions from the completed range of the due index (state_at is
// completed_at), failures from failed_at (migration 3), by the time they were
// recorded.
const countRecent = `
SELECT (SELECT COUNT(*) FROM {{table}} e
        WHERE e.status = 'completed' AND e.state_at >= :since {{and_user}}),
       (SELECT COUNT(*) FROM {{table}} e
        WHERE e.status = 'failed' AND e.updated_at >= :since AND e.state_at IS NOT NULL {{and_user}}),
       (SELECT COUNT(*) FROM {{table}} e
        WHERE e.status = 'failed' AND e.updated_at >= :since AND e.state_at IS NULL {{and_user}})`

// countCompleted reads the completed range of the counts index.
const countCompleted = `
SELECT type, COUNT(*) FROM {{table}} e
WHERE e.status = 'completed' {{and_user}}
GROUP BY type`

// countBlocked counts waiting events behind a given-up event of the same ordering
// key, starting from the given-up ones (few, and in the due index's NULL range).
const countBlocked = `
SELECT COUNT(DISTINCT e.seq) FROM {{table}} g
JOIN {{table}} e ON e.open_key = g.ordering_key AND e.seq > g.seq
WHERE g.status = 'failed' AND g.state_at IS NULL AND g.ordering_key IS NOT NULL
  AND e.status IN ('pending', 'failed') AND e.state_at IS NOT NULL {{and_user}}`

// The paused types: a pause keeps its first time.
const (
	pauseType   = `INSERT IGNORE INTO {{paused}} (type, paused_at) VALUES (:type, :now)`
	resumeType  = `DELETE FROM {{paused}} WHERE type = :type`
	pausedTypes = `SELECT type, paused_at FROM {{paused}} ORDER BY type`
)

// claimStmts are the locking reads of one claim, for one combination of filters.
type claimStmts struct{ expired, pending, retry stmt }

// maxSeq is the wake-up probe: the last entry of the primary key.
const maxSeq = `SELECT COALESCE(MAX(seq), 0) FROM {{table}}`

// stmt is one statement with its parameters' names, in order.
type stmt struct {
	text  []string // the text around the placeholders: len(names)+1 pieces
	names []string
}

var param = regexp.MustCompile(`:[a-z_]+`)

func compile(sql string) stmt {
	var s stmt
	last := 0
	for _, loc := range param.FindAllStringIndex(sql, -1) {
		s.text = append(s.text, sql[last:loc[0]])
		s.names = append(s.names, sql[loc[0]+1:loc[1]])
		last = loc[1]
	}
	s.text = append(s.text, sql[last:])
	return s
}

// args are named arguments.
type args map[string]any

// byID is an argument that differs per event: bind renders it as
// CASE id WHEN ? THEN ? … END.
type byID []struct {
	id    []byte
	value any
}

// bind renders s for the driver. A slice argument (other than []byte) expands to one
// placeholder per element; an empty one to NULL, which matches nothing in IN (…).
func (s stmt) bind(a args) (string, []any) {
	var b strings.Builder
	var out []any
	for i, name := range s.names {
		b.WriteString(s.text[i])
		v, ok := a[name]
		if !ok {
			panic(fmt.Sprintf("outbox/mysql: statement needs :%s", name)) // a bug in this package
		}
		if c, ok := v.(byID); ok {
			b.WriteString("CASE id")
			for _, p := range c {
				b.WriteString(" WHEN ? THEN ?")
				out = append(out, p.id, p.value)
			}
			b.WriteString(" END")
			continue
		}
		if _, isBytes := v.([]byte); !isBytes {
			if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
				if rv.Len() == 0 {
					b.WriteString("NULL")
				}
				for j := range rv.Len() {
					if j > 0 {
						b.WriteString(", ")
					}
					b.WriteByte('?')
					out = append(out, rv.Index(j).Interface())
				}
				continue
			}
		}
		b.WriteByte('?')
		out = append(out, v)
	}
	b.WriteString(s.text[len(s.names)])
	return b.String(), out
}

// queries are the statements of one Store, rendered for its table.
type queries struct {
	insertColumns                         string
	seqsOf                                stmt
	claims                                [2][2][2]claimStmts // [by user][by types][skipping types]
	pauseType, resumeType, pausedTypes    stmt
	giveUp, claimEvents, eventsBySeq      stmt
	heldByOwner, extendLease              stmt
	completeEvents, failEvents, release   stmt
	releaseWithReasons                    stmt
	getEvent, retryEvents, deleteEvents   stmt
	lockForUpdate, updateEvent            stmt
	deleteCompleted                       stmt
	countActiveAll, countActiveUser       stmt
	countCompletedAll, countCompletedUser stmt
	countBlockedAll, countBlockedUser     stmt
	countRecentAll, countRecentUser       stmt
	maxSeq                                stmt
	table                                 string
}

func newQueries(n names) queries {
	renderWith := func(sql, userFilter, typeFilter, skipFilter string) stmt {
		return compile(strings.NewReplacer("{{table}}", n.Table, "{{paused}}", n.Paused,
			"{{and_user}}", userFilter, "{{and_types}}", typeFilter, "{{and_skip}}", skipFilter).Replace(sql))
	}
	render := func(sql, userFilter string) stmt { return renderWith(sql, userFilter, "", "") }
	both := func(sql string) (stmt, stmt) {
		return render(sql, ""), render(sql, "AND e.user_id = :user_id")
	}
	q := queries{
		insertColumns:      strings.ReplaceAll(insertColumns, "{{table}}", n.Table),
		seqsOf:             render(seqsOf, ""),
		giveUp:             render(giveUp, ""),
		claimEvents:        render(claimEvents, ""),
		eventsBySeq:        render(eventsBySeq, ""),
		heldByOwner:        render(heldByOwner, ""),
		extendLease:        render(extendLease, ""),
		completeEvents:     render(completeEvents, ""),
		failEvents:         render(failEvents, ""),
		release:            render(releaseEvents, ""),
		releaseWithReasons: render(releaseWithReasons, ""),
		getEvent:           render(getEvent, ""),
		retryEvents:        render(retryEvents, ""),
		deleteEvents:       render(deleteEvents, ""),
		lockForUpdate:      render(lockForUpdate, ""),
		updateEvent:        render(updateEvent, ""),
		deleteCompleted:    render(deleteCompleted, ""),
		maxSeq:             render(maxSeq, ""),
		table:              n.Table,
	}
	// The held-back types' filter is a variant of its own, used only when a processor
	// holds some back, so that the usual claim's statements stay as they are.
	for u, userFilter := range []string{"", "AND e.user_id = :user_id"} {
		for t, typeFilter := range []string{"", "AND e.type IN (:types)"} {
			for k, skipFilter := range []string{"", "AND e.type NOT IN (:skip_types)"} {
				q.claims[u][t][k] = claimStmts{
					expired: renderWith(expiredLeases, userFilter, typeFilter, skipFilter),
					pending: renderWith(pendingHeads, userFilter, typeFilter, skipFilter),
					retry:   renderWith(retryHeads, userFilter, typeFilter, skipFilter),
				}
			}
		}
	}
	q.pauseType, q.resumeType, q.pausedTypes = render(pauseType, ""), render(resumeType, ""), render(pausedTypes, "")
	q.countActiveAll, q.countActiveUser = both(countActive)
	q.countCompletedAll, q.countCompletedUser = both(countCompleted)
	q.countBlockedAll, q.countBlockedUser = both(countBlocked)
	q.countRecentAll, q.countRecentUser = both(countRecent)
	return q
}

// retryable renders the Retry lock for a filter's WHERE clause.
func (q queries) retryable(filter string) stmt {
	return compile(strings.NewReplacer("{{table}}", q.table, "{{filter}}", filter).Replace(retryable))
}
