package sqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// scanEvents reads rows of eventColumns and closes them.
//
// SQLite keeps any value in any column, and a row written by SQL from another language
// (docs/any-language.md) may hold what the contract does not allow. No such value fails
// the read, which would stop every claim that meets the row: a time written in one of
// SQLite's text formats (datetime('now')) or RFC 3339 is read as that time, an ID in
// another spelling of its UUID as the canonical spelling, and a value that cannot be
// read at all leaves its field zero and is named in the event's Unusable, for the
// processor to give the event up with.
func scanEvents(rows *sql.Rows) ([]outbox.Event, error) {
	events, _, err := scanStored(rows)
	return events, err
}

// scanStored is scanEvents, and also returns, by the index of their event, the stored
// spellings of the IDs that are UUIDs written in another spelling than the canonical
// one (which the event's ID is).
func scanStored(rows *sql.Rows) ([]outbox.Event, map[int]string, error) {
	defer rows.Close()
	var (
		events    []outbox.Event
		respelled map[int]string
	)
	for rows.Next() {
		var (
			e                                          outbox.Event
			status                                     string
			metadata, payload, key, lastErr, errs, own sql.NullString
			attempts, maxAttempts, priority, isNew     anyValue
			created, updated, lastAttempt, next        anyValue
			completed, leaseExp                        anyValue
		)
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.EntityID, &e.UserID, &status, &attempts,
			&maxAttempts, &priority, &isNew, &metadata, &payload, &key, &created, &updated,
			&lastAttempt, &next, &completed, &lastErr, &errs, &own, &leaseExp); err != nil {
			return nil, nil, fmt.Errorf("event %d: %w", e.Seq, err)
		}
		var problems column.Problems
		stored := e.ID
		if readShared(&e, maxAttempts, priority, isNew, metadata, &problems) {
			if respelled == nil {
				respelled = map[int]string{}
			}
			respelled[len(events)] = stored
		}
		e.Status = outbox.Status(status)
		e.Attempts = int(attempts.integer("attempts", &problems))
		if err := column.DecodeErrors(nullBytes(errs), func(n int, at time.Time, msg string) {
			e.Errors = append(e.Errors, outbox.AttemptError{Attempt: n, At: at, Error: msg})
		}); err != nil {
			return nil, nil, fmt.Errorf("event %s: %w", e.ID, err)
		}
		if payload.Valid {
			e.Payload = json.RawMessage(payload.String)
		}
		e.OrderingKey, e.LastError, e.LeaseOwner = key.String, lastErr.String, own.String
		e.CreatedAt, e.UpdatedAt = created.time("created_at", &problems), updated.time("updated_at", &problems)
		e.LastAttemptAt, e.NextAttemptAt = lastAttempt.time("last_attempt_at", &problems), next.time("next_attempt_at", &problems)
		e.CompletedAt, e.LeaseExpiresAt = completed.time("completed_at", &problems), leaseExp.time("lease_expires_at", &problems)
		e.Unusable = problems.String()
		events = append(events, e)
	}
	return events, respelled, rows.Err()
}

// readShared reads what a row of the events table and a row of the log share and
// SQLite may hold in another type or spelling (docs/any-language.md): the ID, to its
// canonical spelling (respelled reports that the stored one was another), max_attempts,
// priority, is_new_record and metadata. What cannot be read is named in problems.
func readShared(e *outbox.Event, maxAttempts, priority, isNew anyValue, metadata sql.NullString, problems *column.Problems) (respelled bool) {
	if !isCanonicalID(e.ID) {
		if c, err := outbox.CanonicalID(e.ID); err == nil {
			e.ID, respelled = c, true
		} else {
			problems.Add("id is not a UUID: " + column.Quote(e.ID))
		}
	}
	e.MaxAttempts = int(maxAttempts.integer("max_attempts", problems))
	e.Priority = int(priority.integer("priority", problems))
	e.IsNewRecord = isNew.integer("is_new_record", problems) != 0
	var problem string
	e.Metadata, problem = column.DecodeMetadata(nullBytes(metadata))
	problems.Add(problem)
	return respelled
}

// nullBytes is the text of v, nil for NULL.
func nullBytes(v sql.NullString) []byte {
	if !v.Valid {
		return nil
	}
	return []byte(v.String)
}

// isCanonicalID reports whether id is a UUID in its canonical spelling (lower-case
// hex, hyphenated): the fast path of every row read.
func isCanonicalID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// anyValue holds a column's value as the driver gives it: SQLite keeps any type in
// any column, whatever the column's declared type.
type anyValue struct{ v any }

func (a *anyValue) Scan(src any) error {
	a.v = src
	return nil
}

// integer reads an integer column: an INTEGER, a REAL without a fraction, or text
// that spells an integer. NULL is 0. Anything else is 0, and a problem named after the
// column.
func (a anyValue) integer(name string, problems *column.Problems) int64 {
	switch v := a.v.(type) {
	case nil:
		return 0
	case int64:
		return v
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
	case bool:
		if v {
			return 1
		}
		return 0
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			return n
		}
	case []byte:
		if n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err == nil {
			return n
		}
	}
	problems.Add(name + " is not an integer: " + a.quote())
	return 0
}

// time reads a time column: Unix microseconds as INTEGER (the contract) or as REAL
// (the contract's expression without its CAST), or text in one of SQLite's date and
// time formats or RFC 3339 (datetime('now'), strftime('%Y-%m-%dT%H:%M:%fZ')), UTC
// unless it says otherwise. NULL is the zero time. Anything else is the zero time, and
// a problem named after the column.
func (a anyValue) time(name string, problems *column.Problems) time.Time {
	switch v := a.v.(type) {
	case nil:
		return time.Time{}
	case int64:
		return column.FromMicros(v)
	case float64:
		if !math.IsNaN(v) && math.Abs(v) < math.MaxInt64 {
			return column.FromMicros(int64(v))
		}
	case time.Time: // a driver that parses times itself
		return outbox.Timestamp(v)
	case string:
		if t, ok := parseTextTime(v); ok {
			return t
		}
	case []byte:
		if t, ok := parseTextTime(string(v)); ok {
			return t
		}
	}
	problems.Add(name + " is not a time: " + a.quote())
	return time.Time{}
}

// quote is the value for a reason: text quoted, numbers as SQL writes them.
func (a anyValue) quote() string {
	switch v := a.v.(type) {
	case string:
		return column.Quote(v)
	case []byte:
		return "a blob of " + strconv.Itoa(len(v)) + " bytes"
	}
	return fmt.Sprint(a.v)
}

// textTimeLayouts are SQLite's date and time formats that carry a date, with 'T' or a
// space between date and time, as time.Parse reads them; a time zone (Z or ±HH:MM)
// may follow the time.
var textTimeLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04Z07:00",
	"2006-01-02 15:04",
	"2006-01-02",
}

// parseTextTime reads s in one of textTimeLayouts, to the microsecond, in UTC.
func parseTextTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 10 && (s[10] == 'T' || s[10] == 't') {
		s = s[:10] + " " + s[11:]
	}
	if n := len(s); n > 0 && s[n-1] == 'z' {
		s = s[:n-1] + "Z"
	}
	for _, layout := range textTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return outbox.Timestamp(t), true
		}
	}
	return time.Time{}, false
}
