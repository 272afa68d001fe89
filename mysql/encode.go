package mysql

import (
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

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
