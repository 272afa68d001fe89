package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fitiq/outbox"
)

// storedError is one entry of the errors column, as the SQL writes it.
type storedError struct {
	Attempt int    `json:"attempt"`
	At      int64  `json:"at"` // Unix microseconds
	Error   string `json:"error"`
}

// scanEvents reads rows of eventColumns and closes them.
func scanEvents(rows pgx.Rows) ([]outbox.Event, error) {
	defer rows.Close()
	var events []outbox.Event
	for rows.Next() {
		var (
			e                                      outbox.Event
			id                                     pgtype.UUID
			status                                 string
			metadata, payload, errs                []byte
			key, lastErr, owner                    *string
			lastAttempt, next, completed, leaseExp *time.Time
		)
		if err := rows.Scan(&e.Seq, &id, &e.Type, &e.EntityID, &e.UserID, &status, &e.Attempts,
			&e.MaxAttempts, &e.Priority, &e.IsNewRecord, &metadata, &payload, &key, &e.CreatedAt, &e.UpdatedAt,
			&lastAttempt, &next, &completed, &lastErr, &errs, &owner, &leaseExp); err != nil {
			return nil, err
		}
		e.ID = uuidString(id)
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
				e.Errors = append(e.Errors, outbox.AttemptError{Attempt: se.Attempt, At: time.UnixMicro(se.At).UTC(), Error: se.Error})
			}
		}
		e.OrderingKey, e.LastError, e.LeaseOwner = deref(key), deref(lastErr), deref(owner)
		e.CreatedAt, e.UpdatedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC()
		e.LastAttemptAt, e.NextAttemptAt = utc(lastAttempt), utc(next)
		e.CompletedAt, e.LeaseExpiresAt = utc(completed), utc(leaseExp)
		events = append(events, e)
	}
	return events, rows.Err()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// uuidString formats a UUID as the canonical lowercase string.
func uuidString(u pgtype.UUID) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(36)
	for i, c := range u.Bytes {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b.WriteByte('-')
		}
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// ts is how times travel to the database: truncated to the microsecond it keeps
// (the server would round), NULL when zero.
func ts(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: outbox.Timestamp(t), Valid: true}
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// checkText rejects what a PostgreSQL text (or jsonb) value cannot hold: a NUL byte or
// invalid UTF-8. Event.Validate has passed already; this is the store's own limit.
func checkText(e *outbox.Event) error {
	bad := func(s string) bool { return strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) }
	for _, f := range []struct{ name, value string }{
		{"Type", e.Type}, {"EntityID", e.EntityID}, {"UserID", e.UserID}, {"OrderingKey", e.OrderingKey},
	} {
		if bad(f.value) {
			return &outbox.FieldError{Field: f.name, Problem: "contains a NUL byte or invalid UTF-8, which PostgreSQL text cannot hold"}
		}
	}
	for k, v := range e.Metadata {
		if bad(k) || bad(v) {
			return &outbox.FieldError{Field: "Metadata", Problem: fmt.Sprintf("entry %q contains a NUL byte or invalid UTF-8, which PostgreSQL jsonb cannot hold", k)}
		}
	}
	if !utf8.Valid(e.Payload) {
		return &outbox.FieldError{Field: "Payload", Problem: "is not valid UTF-8"}
	}
	return nil
}
