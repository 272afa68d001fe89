package sqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// scanEvents reads rows of eventColumns and closes them.
func scanEvents(rows *sql.Rows) ([]outbox.Event, error) {
	defer rows.Close()
	var events []outbox.Event
	for rows.Next() {
		var (
			e                                          outbox.Event
			status                                     string
			metadata, payload, key, lastErr, errs, own sql.NullString
			lastAttempt, next, completed, leaseExp     sql.NullInt64
			created, updated                           int64
		)
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.EntityID, &e.UserID, &status, &e.Attempts,
			&e.MaxAttempts, &e.Priority, &e.IsNewRecord, &metadata, &payload, &key, &created, &updated,
			&lastAttempt, &next, &completed, &lastErr, &errs, &own, &leaseExp); err != nil {
			return nil, err
		}
		e.Status = outbox.Status(status)
		if err := column.DecodeJSON(nullBytes(metadata), nullBytes(errs), &e.Metadata, func(n int, at time.Time, msg string) {
			e.Errors = append(e.Errors, outbox.AttemptError{Attempt: n, At: at, Error: msg})
		}); err != nil {
			return nil, fmt.Errorf("event %s: %w", e.ID, err)
		}
		if payload.Valid {
			e.Payload = json.RawMessage(payload.String)
		}
		e.OrderingKey, e.LastError, e.LeaseOwner = key.String, lastErr.String, own.String
		e.CreatedAt, e.UpdatedAt = column.FromMicros(created), column.FromMicros(updated)
		e.LastAttemptAt, e.NextAttemptAt = column.FromNullMicros(lastAttempt), column.FromNullMicros(next)
		e.CompletedAt, e.LeaseExpiresAt = column.FromNullMicros(completed), column.FromNullMicros(leaseExp)
		events = append(events, e)
	}
	return events, rows.Err()
}

// nullBytes is the text of v, nil for NULL.
func nullBytes(v sql.NullString) []byte {
	if !v.Valid {
		return nil
	}
	return []byte(v.String)
}
