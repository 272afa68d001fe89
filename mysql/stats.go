package mysql

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

// Stats implements outbox.Store. Each count reads the range of its state in the
// counts index; all of them read one snapshot, so that they add up while relays work.
func (s *Store) Stats(ctx context.Context, q outbox.StatsQuery) (outbox.Stats, error) {
	var st outbox.Stats
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	defer tx.Rollback()
	active, completed, blocked, recent := s.q.countActiveAll, s.q.countCompletedAll, s.q.countBlockedAll, s.q.countRecentAll
	if q.UserID != "" {
		active, completed, blocked, recent = s.q.countActiveUser, s.q.countCompletedUser, s.q.countBlockedUser, s.q.countRecentUser
	}
	paused, err := s.pausedSet(ctx, tx, &st)
	if err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	a := args{"user_id": q.UserID, "now": column.Micros(q.Now), "stale_before": column.Micros(q.Now.Add(-q.StaleAfter))}
	query, qa := active.bind(a)
	rows, err := tx.QueryContext(ctx, query, qa...)
	if err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	oldest := int64(-1)
	dueSince := sql.NullInt64{}
	for rows.Next() {
		var (
			typ, status          string
			givenUp              bool
			n, stale, stuck, min int64
			due                  sql.NullInt64
		)
		if err := rows.Scan(&typ, &status, &givenUp, &n, &min, &stale, &stuck, &due); err != nil {
			rows.Close()
			return st, fmt.Errorf("outbox/mysql: stats: %w", err)
		}
		st.Add(typ, outbox.Status(status), givenUp, int(n))
		// A stuck event counts whatever its type: a pause stops claims, not a lease
		// from running out.
		counted := status == string(outbox.StatusProcessing)
		if counted {
			st.Stuck += int(stuck)
		}
		if status != string(outbox.StatusProcessing) && !givenUp && !paused[typ] {
			counted = true
			st.Stale += int(stale)
			if oldest < 0 || min < oldest {
				oldest = min
			}
		}
		if counted && due.Valid && (!dueSince.Valid || due.Int64 < dueSince.Int64) {
			dueSince = due
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	if oldest >= 0 {
		st.OldestPendingAge = max(q.Now.Sub(column.FromMicros(oldest)), 0)
	}
	if dueSince.Valid {
		st.OldestDueAge = max(q.Now.Sub(column.FromMicros(dueSince.Int64)), 0)
	}
	if q.Window > 0 {
		st.Recent.Window = q.Window
		query, qa := recent.bind(args{"user_id": q.UserID, "since": column.Micros(q.Now.Add(-q.Window))})
		if err := tx.QueryRowContext(ctx, query, qa...).Scan(&st.Recent.Completed, &st.Recent.Failed, &st.Recent.GivenUp); err != nil {
			return st, fmt.Errorf("outbox/mysql: stats: %w", err)
		}
	}
	query, qa = completed.bind(a)
	rows, err = tx.QueryContext(ctx, query, qa...)
	if err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			rows.Close()
			return st, fmt.Errorf("outbox/mysql: stats: %w", err)
		}
		st.Add(typ, outbox.StatusCompleted, false, int(n))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	query, qa = blocked.bind(a)
	if err := tx.QueryRowContext(ctx, query, qa...).Scan(&st.Blocked); err != nil {
		return st, fmt.Errorf("outbox/mysql: stats: %w", err)
	}
	return st, nil
}

// pausedSet reads the paused types in tx, for Stats: their events are counted, but
// neither stale nor the oldest waiting.
func (s *Store) pausedSet(ctx context.Context, tx *sql.Tx, st *outbox.Stats) (map[string]bool, error) {
	paused, err := queryPaused(ctx, tx, s.q.pausedTypes)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(paused))
	for _, p := range paused {
		st.Paused = append(st.Paused, p.Type)
		set[p.Type] = true
	}
	return set, nil
}
