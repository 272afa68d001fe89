package postgres

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fitiq/outbox"
)

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

func filterArgs(f outbox.Filter) pgx.NamedArgs {
	return pgx.NamedArgs{
		"all_ids":    len(f.IDs) == 0,
		"ids":        parseIDs(f.IDs),
		"status":     string(f.Status),
		"given_up":   f.GivenUp,
		"due_before": ts(f.DueBefore),
		"stuck_at":   ts(f.StuckAt),
		"blocked":    f.Blocked,
		"type":       f.Type,
		"user_id":    f.UserID,
		"after_seq":  f.AfterSeq,
	}
}

// parseIDs converts event IDs for the database, leaving out strings that are not
// UUIDs: no event has such an ID.
func parseIDs(ids []string) []pgtype.UUID {
	out := make([]pgtype.UUID, 0, len(ids))
	for _, id := range ids {
		if u, err := uuid.Parse(id); err == nil {
			out = append(out, pgtype.UUID{Bytes: u, Valid: true})
		}
	}
	return out
}
