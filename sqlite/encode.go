package sqlite

import (
	"database/sql"
	"encoding/json"
	"strings"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// jsonIDs encodes, for json_each, the IDs of outcomes and lease renewals, which name
// events a claim returned: each in its canonical spelling, and as given too when that
// differs (an ID that is not a UUID, or a UUID another event's row holds in the
// canonical spelling, is returned by the claim as it is stored).
func jsonIDs(ids []string) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		c, err := outbox.CanonicalID(id)
		if err == nil {
			out = append(out, c)
		}
		if c != id {
			out = append(out, id)
		}
	}
	return jsonArray(out)
}

// lookupIDs encodes, for json_each, the IDs an operator names (Get, List, Retry,
// Update, Delete): the ID as given, and for a UUID its canonical spelling and the
// other spellings a writer from another language may have stored it in (upper case,
// braces, no hyphens, urn:uuid:). The claim rewrites a stored ID in the canonical
// spelling, so this matters for the events not yet claimed.
func lookupIDs(ids []string) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, id)
		c, err := outbox.CanonicalID(id)
		if err != nil {
			continue
		}
		upper, hex := strings.ToUpper(c), strings.ReplaceAll(c, "-", "")
		for _, s := range []string{c, upper, "{" + c + "}", "{" + upper + "}", hex, strings.ToUpper(hex), "urn:uuid:" + c} {
			if s != id {
				out = append(out, s)
			}
		}
	}
	return jsonArray(out)
}

func jsonArray(ids []string) string {
	if len(ids) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(ids) // a []string always encodes
	return string(b)
}

// jsonReasons encodes released events' reasons (event ID → reason) for json_each.
func jsonReasons(reasons map[string]string) string {
	if len(reasons) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(reasons) // a map[string]string always encodes
	return string(b)
}

func filterArgs(f outbox.Filter) []any {
	return []any{
		sql.Named("all_ids", len(f.IDs) == 0),
		sql.Named("ids", lookupIDs(f.IDs)),
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
