package mysql

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

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
		e.OrderingKey, e.LastError, e.LeaseOwner = key.String, lastErr.String, owner.String
		e.CreatedAt, e.UpdatedAt = column.FromMicros(created), column.FromMicros(updated)
		e.LastAttemptAt, e.NextAttemptAt = column.FromNullMicros(lastAttempt), column.FromNullMicros(next)
		e.CompletedAt, e.LeaseExpiresAt = column.FromNullMicros(completed), column.FromNullMicros(leaseExp)
		events = append(events, e)
	}
	return events, rows.Err()
}
