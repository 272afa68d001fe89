package mysql

import (
	"context"
	"database/sql"

	"github.com/fitiq/outbox"
)

// Hooks for the package's external tests.

// ClaimConflicts is how many claims ran again after losing a race for an ordering key.
func (s *Store) ClaimConflicts() int64 { return s.claimConflicts.Load() }

// ClaimInTx runs the statements of one claim in tx, which the caller commits or
// rolls back.
func (s *Store) ClaimInTx(ctx context.Context, tx *sql.Tx, p outbox.ClaimParams) ([]outbox.Event, error) {
	return s.claim(ctx, tx, p)
}

// Statement renders one of the store's statements, by the name of its constant, with
// args; the user variant when args has a user_id.
func (s *Store) Statement(name string, a map[string]any) (string, []any) {
	_, user := a["user_id"]
	pick := func(all, one stmt) stmt {
		if user {
			return one
		}
		return all
	}
	st, ok := map[string]stmt{
		"expiredLeases":     pick(s.q.claims[0][0].expired, s.q.claims[1][0].expired),
		"pendingHeads":      pick(s.q.claims[0][0].pending, s.q.claims[1][0].pending),
		"retryHeads":        pick(s.q.claims[0][0].retry, s.q.claims[1][0].retry),
		"countActive":       pick(s.q.countActiveAll, s.q.countActiveUser),
		"countCompleted":    pick(s.q.countCompletedAll, s.q.countCompletedUser),
		"countBlocked":      pick(s.q.countBlockedAll, s.q.countBlockedUser),
		"countRecent":       pick(s.q.countRecentAll, s.q.countRecentUser),
		"deleteCompleted":   s.q.deleteCompleted,
		"maxSeq":            s.q.maxSeq,
		"completeEvents":    s.q.completeEvents,
		"claimEvents":       s.q.claimEvents,
		"timelineCompleted": s.render(timelineCompleted),
		"timelineFailed":    s.render(timelineFailed),
		"keyHead":           s.render(keyHead),
	}[name]
	if !ok {
		panic("no statement " + name)
	}
	return st.bind(a)
}

// ListStatement renders List's statement for f.
func (s *Store) ListStatement(f outbox.Filter) (string, []any) { return s.listQuery(f) }
