package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// Stats implements outbox.Store.
func (s *Store) Stats(ctx context.Context, q outbox.StatsQuery) (outbox.Stats, error) {
	var st outbox.Stats
	// One snapshot for all the counts (a read transaction: it takes no write lock), so
	// that they add up while a processor is working.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	defer tx.Rollback()
	user := sql.Named("user_id", q.UserID)
	rows, err := tx.QueryContext(ctx, countByTypeAndStatus, user)
	if err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			typ, status string
			givenUp     bool
			n           int
		)
		if err := rows.Scan(&typ, &status, &givenUp, &n); err != nil {
			return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
		}
		st.Add(typ, outbox.Status(status), givenUp, n)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	now := sql.Named("now", column.Micros(q.Now))
	// The times are read as the scan reads them: a row written by SQL may hold one
	// that is not an integer (see scanEvents), and a count must not fail on it.
	var duePending, dueRetry, stuckSince anyValue
	if err := tx.QueryRowContext(ctx, countStale, user, now,
		sql.Named("stale_before", column.Micros(q.Now.Add(-q.StaleAfter))),
	).Scan(&st.Stale, &duePending, &dueRetry); err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	if err := tx.QueryRowContext(ctx, countStuck, user, now).Scan(&st.Stuck, &stuckSince); err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	for _, since := range []anyValue{duePending, dueRetry, stuckSince} {
		if at := since.time("", new(column.Problems)); !at.IsZero() {
			st.OldestDueAge = max(st.OldestDueAge, q.Now.Sub(at))
		}
	}
	if q.Window > 0 {
		st.Recent.Window = q.Window
		if err := tx.QueryRowContext(ctx, countRecent, user, sql.Named("since", column.Micros(q.Now.Add(-q.Window)))).
			Scan(&st.Recent.Completed, &st.Recent.Failed, &st.Recent.GivenUp); err != nil {
			return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
		}
	}
	var oldest anyValue
	if err := tx.QueryRowContext(ctx, oldestWaiting, user).Scan(&oldest); err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	if at := oldest.time("", new(column.Problems)); !at.IsZero() {
		st.OldestPendingAge = max(q.Now.Sub(at), 0)
	}
	if err := tx.QueryRowContext(ctx, countBlocked, user).Scan(&st.Blocked); err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	paused, err := queryPaused(ctx, tx)
	if err != nil {
		return st, fmt.Errorf("outbox/sqlite: stats: %w", err)
	}
	for _, p := range paused {
		st.Paused = append(st.Paused, p.Type)
	}
	return st, nil
}
