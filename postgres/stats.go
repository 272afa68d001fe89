package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

// Stats implements outbox.Store. Each count reads the partial index of the state it
// counts; see countActive and its neighbours.
func (s *Store) Stats(ctx context.Context, q outbox.StatsQuery) (outbox.Stats, error) {
	var st outbox.Stats
	// One snapshot for all the counts, so that they add up while relays are working.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		s.abandoned(ctx, err)
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	defer tx.Rollback(ctx)
	user := pgx.NamedArgs{"user_id": q.UserID}
	// Planned for these arguments: the user filter folds away when unset.
	mode := pgx.QueryExecModeExec
	rows, err := tx.Query(ctx, s.q.countActive, mode, user)
	if err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	var (
		typ, status string
		givenUp     bool
		n           int
	)
	if _, err := pgx.ForEachRow(rows, []any{&typ, &status, &givenUp, &n}, func() error {
		st.Add(typ, outbox.Status(status), givenUp, n)
		return nil
	}); err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	rows, err = tx.Query(ctx, s.q.countCompleted, mode, user)
	if err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&typ, &n}, func() error {
		st.Add(typ, outbox.StatusCompleted, false, n)
		return nil
	}); err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	var oldest, dueSince, stuckSince *time.Time
	if err := tx.QueryRow(ctx, s.q.countWaiting, mode, pgx.NamedArgs{
		"user_id": q.UserID, "stale_before": ts(q.Now.Add(-q.StaleAfter)), "now": ts(q.Now),
	}).Scan(&st.Stale, &oldest, &dueSince); err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	if oldest != nil {
		st.OldestPendingAge = max(q.Now.Sub(*oldest), 0)
	}
	if err := tx.QueryRow(ctx, s.q.countStuck, mode, pgx.NamedArgs{"user_id": q.UserID, "now": ts(q.Now)}).
		Scan(&st.Stuck, &stuckSince); err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	for _, since := range []*time.Time{dueSince, stuckSince} {
		if since != nil {
			st.OldestDueAge = max(st.OldestDueAge, q.Now.Sub(*since))
		}
	}
	if q.Window > 0 {
		st.Recent.Window = q.Window
		if err := tx.QueryRow(ctx, s.q.countRecent, mode, pgx.NamedArgs{"user_id": q.UserID, "since": ts(q.Now.Add(-q.Window))}).
			Scan(&st.Recent.Completed, &st.Recent.Failed, &st.Recent.GivenUp); err != nil {
			return st, fmt.Errorf("outbox/postgres: stats: %w", err)
		}
	}
	if err := tx.QueryRow(ctx, s.q.countBlocked, mode, user).Scan(&st.Blocked); err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	paused, err := queryPaused(ctx, tx, s.q.pausedTypes)
	if err != nil {
		return st, fmt.Errorf("outbox/postgres: stats: %w", err)
	}
	for _, p := range paused {
		st.Paused = append(st.Paused, p.Type)
	}
	return st, nil
}
