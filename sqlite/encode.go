package sqlite

import (
	"database/sql"
	"encoding/json"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

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

// canonicalID is the stored spelling of id; a string that is not a UUID is passed
// as it is, and matches no event.
func canonicalID(id string) string {
	if c, err := outbox.CanonicalID(id); err == nil {
		return c
	}
	return id
}

func filterArgs(f outbox.Filter) []any {
	return []any{
		sql.Named("all_ids", len(f.IDs) == 0),
		sql.Named("ids", jsonIDs(f.IDs)),
		sql.Named("status", string(f.Status)),
		sql.Named("given_up", f.GivenUp),
		sql.Named("due_before", column.NullMicros(f.DueBefore)),
		sql.Named("stuck_at", column.NullMicros(f.StuckAt)),
		sql.Named("blocked", f.Blocked),
		sql.Named("type", f.Type),
		sql.Named("user_id", f.UserID),
		sql.Named("after_seq", f.AfterSeq),
	}
}

// jsonTypes is the :types or :skip_types argument of a claim: empty for none, else a
// JSON array.
func jsonTypes(types []string) string {
	if len(types) == 0 {
		return ""
	}
	b, _ := json.Marshal(types) // a []string always marshals
	return string(b)
}
