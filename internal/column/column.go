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
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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

// MetadataProblem starts the reason DecodeMetadata gives for a metadata column that
// is not a JSON object of strings.
const MetadataProblem = "metadata is not a JSON object of strings"

// DecodeMetadata decodes the metadata column (nil for NULL, or JSON null: no metadata).
// The contract (docs/any-language.md) wants a JSON object whose values are strings; a
// row written by SQL may hold anything else. Such a column does not fail the read: the
// metadata is nil and problem says what is wrong with it, quoting it, so that the
// store can read the rest of the row and the processor give the event up with that
// reason (outbox.Event.Unusable). A null value in the object reads as "".
func DecodeMetadata(col []byte) (metadata map[string]string, problem string) {
	if col == nil {
		return nil, ""
	}
	if err := json.Unmarshal(col, &metadata); err == nil {
		return metadata, ""
	}
	return nil, MetadataProblem + ": " + metadataProblem(col)
}

// metadataProblem says what is wrong with col, which is not a JSON object of strings.
func metadataProblem(col []byte) string {
	var v any
	if err := json.Unmarshal(col, &v); err != nil {
		return fmt.Sprintf("it is not JSON: %s", Quote(string(col)))
	}
	obj, ok := v.(map[string]any)
	if !ok {
		b, _ := json.Marshal(v) // decoded from JSON: encodes again
		return fmt.Sprintf("it is %s: %s", jsonKind(v), cut(string(b)))
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if _, ok := obj[k].(string); ok || obj[k] == nil {
			continue
		}
		b, _ := json.Marshal(obj[k]) // decoded from JSON: encodes again
		return fmt.Sprintf("the value of %s is %s: %s", Quote(k), jsonKind(obj[k]), cut(string(b)))
	}
	return fmt.Sprintf("it cannot be read: %s", Quote(string(col))) // not reached: every value is a string
}

// jsonKind names the JSON kind of a value decoded into an any.
func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// maxQuoted bounds what Quote keeps of a value.
const maxQuoted = 120

// Quote is s as a Go string literal, cut to its first 120 bytes (on a rune boundary,
// marked with …): how a reason quotes a stored value that could be long.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:runeCut(s)]) + "…"
}

// cut is s (compact JSON) cut like Quote, unquoted.
func cut(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:runeCut(s)] + "…"
}

func runeCut(s string) int {
	n := maxQuoted
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// DecodeErrors decodes the errors column (a JSON array of {attempt, at, error}, at in
// Unix microseconds; nil for NULL) into one call of attempt per entry, oldest first.
// The relay alone writes this column.
func DecodeErrors(col []byte, attempt func(n int, at time.Time, err string)) error {
	if col == nil {
		return nil
	}
	var stored []storedError
	if err := json.Unmarshal(col, &stored); err != nil {
		return fmt.Errorf("decode errors: %w", err)
	}
	for _, se := range stored {
		attempt(se.Attempt, FromMicros(se.At), se.Error)
	}
	return nil
}

// Problems collects what a store could not read of one row, for outbox.Event.Unusable.
type Problems []string

// Add records a problem; an empty one is none.
func (p *Problems) Add(problem string) {
	if problem != "" {
		*p = append(*p, problem)
	}
}

// String joins the problems with "; ", or is empty when there are none.
func (p Problems) String() string { return strings.Join(p, "; ") }

// CheckRequired records the problems of a row whose type or entity ID is empty, which
// the events table's CHECKs refuse and the log's table, without CHECKs, does not.
func CheckRequired(typ, entityID string, problems *Problems) {
	if typ == "" {
		problems.Add("type is empty")
	}
	if entityID == "" {
		problems.Add("entity_id is empty")
	}
}

// EmptyPlaceholder stands for an empty type or entity ID in the events table, whose
// CHECKs refuse one, when an unusable event of the log moves there given up: its
// reason says what was written.
const EmptyPlaceholder = "(empty)"
