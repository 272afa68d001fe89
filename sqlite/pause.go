package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

var _ outbox.TypePauser = (*Store)(nil)

// PauseType implements outbox.TypePauser.
func (s *Store) PauseType(ctx context.Context, eventType string, now time.Time) error {
	if err := outbox.ValidateType("type", eventType); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, pauseType, sql.Named("type", eventType), sql.Named("now", column.Micros(now))); err != nil {
		return fmt.Errorf("outbox/sqlite: pause %q: %w", eventType, err)
	}
	return nil
}

// ResumeType implements outbox.TypePauser. Processors of this store wake at once.
func (s *Store) ResumeType(ctx context.Context, eventType string) (bool, error) {
	res, err := s.db.ExecContext(ctx, resumeType, sql.Named("type", eventType))
	if err != nil {
		return false, fmt.Errorf("outbox/sqlite: resume %q: %w", eventType, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox/sqlite: resume %q: %w", eventType, err)
	}
	if n > 0 {
		s.notify(nil) // its events are due again, for every user
	}
	return n > 0, nil
}

// PausedTypes implements outbox.TypePauser.
func (s *Store) PausedTypes(ctx context.Context) ([]outbox.PausedType, error) {
	paused, err := queryPaused(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: paused types: %w", err)
	}
	return paused, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryPaused(ctx context.Context, q querier) ([]outbox.PausedType, error) {
	rows, err := q.QueryContext(ctx, pausedTypes)
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
