package mysql

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// storedError is one entry of the errors column, as the SQL writes it.
type storedError struct {
	Attempt int    `json:"attempt"`
	At      int64  `json:"at"` // Unix microseconds
	Error   string `json:"error"`
}

// scanEvents reads rows of eventColumns and closes them.
func scanEvents(rows *sql.Rows) ([]outbox.Event, error) {
	defer rows.Close()
	var events []outbox.Event
	for rows.Next() {
		var (
			e                                      outbox.Event
			id                                     []byte
			status                                 string
			metadata, payload, errs                []byte
			key, lastErr, owner                    sql.NullString
			created, updated                       int64
			lastAttempt, next, completed, leaseExp sql.NullInt64
		)
		if err := rows.Scan(&e.Seq, &id, &e.Type, &e.EntityID, &e.UserID, &status, &e.Attempts,
			&e.MaxAttempts, &e.Priority, &e.IsNewRecord, &metadata, &payload, &key, &created, &updated,
			&lastAttempt, &next, &completed, &lastErr, &errs, &owner, &leaseExp); err != nil {
			return nil, err
		}
		u, err := uuid.FromBytes(id)
		if err != nil {
			return nil, fmt.Errorf("event %d: id: %w", e.Seq, err)
		}
		e.ID = u.String()
		e.Status = outbox.Status(status)
		if metadata != nil {
			if err := json.Unmarshal(metadata, &e.Metadata); err != nil {
				return nil, fmt.Errorf("event %s: decode metadata: %w", e.ID, err)
			}
		}
		if payload != nil {
			e.Payload = json.RawMessage(payload)
		}
		if errs != nil {
			var stored []storedError
			if err := json.Unmarshal(errs, &stored); err != nil {
				return nil, fmt.Errorf("event %s: decode errors: %w", e.ID, err)
			}
			for _, se := range stored {
				e.Errors = append(e.Errors, outbox.AttemptError{Attempt: se.Attempt, At: fromMicros(se.At), Error: se.Error})
			}
		}
		e.OrderingKey, e.LastError, e.LeaseOwner = key.String, lastErr.String, owner.String
		e.CreatedAt, e.UpdatedAt = fromMicros(created), fromMicros(updated)
		e.LastAttemptAt, e.NextAttemptAt = fromNullMicros(lastAttempt), fromNullMicros(next)
		e.CompletedAt, e.LeaseExpiresAt = fromNullMicros(completed), fromNullMicros(leaseExp)
		events = append(events, e)
	}
	return events, rows.Err()
}

// micros is how the store keeps times: Unix microseconds, UTC.
func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros is micros, NULL for the zero time.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// idBytes converts event IDs for the database, leaving out strings that are not
// UUIDs: no event has such an ID.
func idBytes(ids []string) [][]byte {
	out := make([][]byte, 0, len(ids))
	for _, id := range ids {
		if u, err := uuid.Parse(id); err == nil {
			out = append(out, u[:])
		}
	}
	return out
}

// checkText rejects what a utf8mb4 column cannot hold: invalid UTF-8 (the server
// would refuse it, or under a lax sql_mode, mangle it). Event.Validate has passed.
func checkText(e *outbox.Event) error {
	for _, f := range []struct{ name, value string }{
		{"Type", e.Type}, {"EntityID", e.EntityID}, {"UserID", e.UserID}, {"OrderingKey", e.OrderingKey},
	} {
		if !utf8.ValidString(f.value) {
			return &outbox.FieldError{Field: f.name, Problem: "is not valid UTF-8, which a utf8mb4 column cannot hold"}
		}
	}
	for k, v := range e.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return &outbox.FieldError{Field: "Metadata", Problem: fmt.Sprintf("entry %q is not valid UTF-8", k)}
		}
	}
	return nil
}
