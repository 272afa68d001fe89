package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

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
		// Metadata written by SQL that is not an object of strings does not fail the
		// read: the processor gives the event up with the reason (Event.Unusable).
		e.Metadata, e.Unusable = column.DecodeMetadata(metadata)
		if err := column.DecodeErrors(errs, func(n int, at time.Time, msg string) {
			e.Errors = append(e.Errors, outbox.AttemptError{Attempt: n, At: at, Error: msg})
		}); err != nil {
			return nil, fmt.Errorf("event %s: %w", e.ID, err)
		}
		if payload != nil {
			e.Payload = json.RawMessage(payload)
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
