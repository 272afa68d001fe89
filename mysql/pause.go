package mysql

import (
	"context"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

var _ outbox.TypePauser = (*Store)(nil)

// PauseType implements outbox.TypePauser. Every relay on the table stops claiming the
// type at its next claim.
func (s *Store) PauseType(ctx context.Context, eventType string, now time.Time) error {
	if err := outbox.ValidateType("type", eventType); err != nil {
		return err
	}
	query, qa := s.q.pauseType.bind(args{"type": eventType, "now": column.Micros(outbox.Timestamp(now))})
	if _, err := s.db.ExecContext(ctx, query, qa...); err != nil {
		return fmt.Errorf("outbox/mysql: pause %q: %w", eventType, err)
	}
	return nil
}

// ResumeType implements outbox.TypePauser. Processors of this store wake at once; those
// of other processes find the type's events at their next poll or probe.
func (s *Store) ResumeType(ctx context.Context, eventType string) (bool, error) {
	query, qa := s.q.resumeType.bind(args{"type": eventType})
	res, err := s.db.ExecContext(ctx, query, qa...)
	if err != nil {
		return false, fmt.Errorf("outbox/mysql: resume %q: %w", eventType, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox/mysql: resume %q: %w", eventType, err)
	}
	if n > 0 {
		s.notify(nil)
	}
	return n > 0, nil
}

// PausedTypes implements outbox.TypePauser.
func (s *Store) PausedTypes(ctx context.Context) ([]outbox.PausedType, error) {
	paused, err := queryPaused(ctx, s.db, s.q.pausedTypes)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: paused types: %w", err)
	}
	return paused, nil
}

func queryPaused(ctx context.Context, q querier, st stmt) ([]outbox.PausedType, error) {
	query, qa := st.bind(args{})
	rows, err := q.QueryContext(ctx, query, qa...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var paused []outbox.PausedType
	for rows.Next() {
		var (
			p  outbox.PausedType
			at int64
		)
		if err := rows.Scan(&p.Type, &at); err != nil {
			return nil, err
		}
		p.Since = column.FromMicros(at)
		paused = append(paused, p)
	}
	return paused, rows.Err()
}
