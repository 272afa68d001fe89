package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

var _ outbox.TypePauser = (*Store)(nil)

// PauseType implements outbox.TypePauser. Every relay on the table stops claiming the
// type at its next claim.
func (s *Store) PauseType(ctx context.Context, eventType string, now time.Time) error {
	if err := outbox.ValidateType("type", eventType); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.q.pauseType, pgx.NamedArgs{"type": eventType, "now": outbox.Timestamp(now)}); err != nil {
		return fmt.Errorf("outbox/postgres: pause %q: %w", eventType, err)
	}
	s.analyzePaused(ctx)
	return nil
}

// analyzePaused refreshes the planner's statistics of the paused-types table after a
// change, so that claims are planned for the types actually paused (see migration
// 003). Autovacuum would wait for 50 changes. A failure (say, a role that may not
// analyze the table) only leaves the statistics older.
func (s *Store) analyzePaused(ctx context.Context) {
	if _, err := s.pool.Exec(ctx, s.q.analyzePaused); err != nil {
		s.log.Warn("analyzing the paused-types table failed; claims are planned with older statistics", "err", err)
	}
}

// ResumeType implements outbox.TypePauser. Relays are told at once, as for a commit.
func (s *Store) ResumeType(ctx context.Context, eventType string) (bool, error) {
	tag, err := s.pool.Exec(ctx, s.q.resumeType, pgx.NamedArgs{"type": eventType})
	if err != nil {
		return false, fmt.Errorf("outbox/postgres: resume %q: %w", eventType, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	s.analyzePaused(ctx)
	s.wake.committed(map[string]struct{}{"": {}})
	return true, nil
}

// PausedTypes implements outbox.TypePauser.
func (s *Store) PausedTypes(ctx context.Context) ([]outbox.PausedType, error) {
	paused, err := queryPaused(ctx, s.pool, s.q.pausedTypes)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: paused types: %w", err)
	}
	return paused, nil
}

func queryPaused(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, query string) ([]outbox.PausedType, error) {
	rows, err := q.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (outbox.PausedType, error) {
		var p outbox.PausedType
		err := r.Scan(&p.Type, &p.Since)
		p.Since = p.Since.UTC()
		return p, err
	})
}
