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
// args; the user variant when args has a user_id, and the claim's variant holding
// types back when it has skip_types.
func (s *Store) Statement(name string, a map[string]any) (string, []any) {
	_, user := a["user_id"]
	pick := func(all, one stmt) stmt {
		if user {
			return one
		}
		return all
	}
	byUser, skipping := 0, 0
	if user {
		byUser = 1
	}
	if _, ok := a["skip_types"]; ok {
		skipping = 1
	}
	claims := s.q.claims[byUser][0][skipping]
	st, ok := map[string]stmt{
		"expiredLeases":     claims.expired,
		"pendingHeads":      claims.pending,
		"retryHeads":        claims.retry,
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
