package sqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
)

// micros is how the store keeps times: Unix microseconds, UTC.
func micros(t time.Time) int64 { return t.UnixMicro() }

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

func jsonIDs(ids []string) string {
	// IDs are stored in their canonical spelling; another spelling must find them too.
	ids = outbox.CanonicalIDs(ids)
	if len(ids) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(ids) // a []string always encodes
	return string(b)
}

// jsonReasons encodes released events' reasons (canonical ID → reason) for json_each.
func jsonReasons(reasons map[string]string) string {
	if len(reasons) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(reasons) // a map[string]string always encodes
	return string(b)
}

// storedError is one entry of the errors column, as the SQL writes it.
type storedError struct {
	Attempt int    `json:"attempt"`
	At      int64  `json:"at"`
	Error   string `json:"error"`
}

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
		if metadata.Valid {
			if err := json.Unmarshal([]byte(metadata.String), &e.Metadata); err != nil {
				return nil, fmt.Errorf("event %s: decode metadata: %w", e.ID, err)
			}
		}
		if payload.Valid {
			e.Payload = json.RawMessage(payload.String)
		}
		if errs.Valid {
			var stored []storedError
			if err := json.Unmarshal([]byte(errs.String), &stored); err != nil {
				return nil, fmt.Errorf("event %s: decode errors: %w", e.ID, err)
			}
			for _, se := range stored {
				e.Errors = append(e.Errors, outbox.AttemptError{Attempt: se.Attempt, At: fromMicros(se.At), Error: se.Error})
			}
		}
		e.OrderingKey, e.LastError, e.LeaseOwner = key.String, lastErr.String, own.String
		e.CreatedAt, e.UpdatedAt = fromMicros(created), fromMicros(updated)
		e.LastAttemptAt, e.NextAttemptAt = fromNullMicros(lastAttempt), fromNullMicros(next)
		e.CompletedAt, e.LeaseExpiresAt = fromNullMicros(completed), fromNullMicros(leaseExp)
		events = append(events, e)
	}
	return events, rows.Err()
}

// canonicalID is the stored spelling of id; a string that is not a UUID is passed
// as it is, and matches no event.
func canonicalID(id string) string {
	if c, err := outbox.CanonicalID(id); err == nil {
		return c
	}
	return id
}
