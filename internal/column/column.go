// Package column converts an event's values to and from the columns the stores keep
// them in, where the dialects agree: times as Unix microseconds and empty strings as
// NULL (SQLite and MySQL), and the JSON of the metadata and errors columns (every
// store). What a dialect does its own way (IDs, PostgreSQL's timestamptz) stays in
// its store.
package column

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Micros is how the SQLite and MySQL stores keep times: Unix microseconds, UTC.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// NullMicros is Micros, NULL for the zero time.
func NullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// FromMicros is the time of Unix microseconds us, in UTC.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// FromNullMicros is FromMicros, the zero time for NULL.
func FromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return FromMicros(v.Int64)
}

// NullString is s, NULL when empty.
func NullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// storedError is one entry of the errors column, as the SQL writes it.
type storedError struct {
	Attempt int    `json:"attempt"`
	At      int64  `json:"at"` // Unix microseconds
	Error   string `json:"error"`
}

// DecodeJSON decodes the metadata column (nil for NULL) into metadata, and the errors
// column (a JSON array of {attempt, at, error}, at in Unix microseconds; nil for
// NULL) into one call of attempt per entry, oldest first.
func DecodeJSON(metadataColumn, errorsColumn []byte, metadata *map[string]string, attempt func(n int, at time.Time, err string)) error {
	if metadataColumn != nil {
		if err := json.Unmarshal(metadataColumn, metadata); err != nil {
			return fmt.Errorf("decode metadata: %w", err)
		}
	}
	if errorsColumn != nil {
		var stored []storedError
		if err := json.Unmarshal(errorsColumn, &stored); err != nil {
			return fmt.Errorf("decode errors: %w", err)
		}
		for _, se := range stored {
			attempt(se.Attempt, FromMicros(se.At), se.Error)
		}
	}
	return nil
}
