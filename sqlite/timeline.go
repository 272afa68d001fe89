package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

var (
	_ outbox.Timeline     = (*Store)(nil)
	_ outbox.KeyInspector = (*Store)(nil)
)

// timelineCompleted counts completions per minute from the completed index
// (completed_at, for cleanup), without reading the table.
const timelineCompleted = `
SELECT completed_at / 60000000, count(*) FROM outbox_events
WHERE status = 'completed' AND completed_at >= :since AND completed_at < :until
GROUP BY 1`

// timelineFailed counts failed events by the minute of their latest failure (the
// update that recorded it). It reads the failed part of the touched index and the rows
// it finds there, so its cost follows the failed events, not the table.
const timelineFailed = `
SELECT updated_at / 60000000, count(*), sum(next_attempt_at IS NULL) FROM outbox_events
WHERE status <> 'pending' AND status = 'failed' AND updated_at >= :since AND updated_at < :until
GROUP BY 1`

// keyHead reads the first entry of the key in the ordering-key index.
const keyHead = `SELECT ` + eventColumns + ` FROM outbox_events
WHERE ordering_key = :key AND ordering_key IS NOT NULL AND status <> 'completed'
ORDER BY seq LIMIT 1`

// Timeline implements outbox.Timeline.
func (s *Store) Timeline(ctx context.Context, q outbox.TimelineQuery) ([]outbox.TimelineBucket, error) {
	if q.Until.Before(q.Since) {
		return nil, &outbox.FieldError{Field: "TimelineQuery.Until", Problem: "must not be before Since"}
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
	}
	defer tx.Rollback()
	window := []any{sql.Named("since", column.Micros(q.Since)), sql.Named("until", column.Micros(q.Until))}
	completedWindow := []any{sql.Named("since", column.Micros(later(q.Since, q.CompletedSince))), sql.Named("until", column.Micros(q.Until))}
	buckets := map[int64]*outbox.TimelineBucket{}
	bucket := func(minute int64) *outbox.TimelineBucket {
		b := buckets[minute]
		if b == nil {
			b = &outbox.TimelineBucket{Minute: column.FromMicros(minute * 60_000_000)}
			buckets[minute] = b
		}
		return b
	}
	rows, err := tx.QueryContext(ctx, timelineCompleted, completedWindow...)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
	}
	for rows.Next() {
		var minute int64
		var n int
		if err := rows.Scan(&minute, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
		}
		bucket(minute).Completed = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
	}
	rows, err = tx.QueryContext(ctx, timelineFailed, window...)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var minute int64
		var n, givenUp int
		if err := rows.Scan(&minute, &n, &givenUp); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
		}
		b := bucket(minute)
		b.Failed, b.GivenUp = n, givenUp
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: timeline: %w", err)
	}
	out := make([]outbox.TimelineBucket, 0, len(buckets))
	for _, b := range buckets {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b outbox.TimelineBucket) int { return a.Minute.Compare(b.Minute) })
	return out, nil
}

// KeyHead implements outbox.KeyInspector.
func (s *Store) KeyHead(ctx context.Context, key string) (outbox.Event, error) {
	rows, err := s.db.QueryContext(ctx, keyHead, sql.Named("key", key))
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/sqlite: key head %q: %w", key, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/sqlite: key head %q: %w", key, err)
	}
	if len(events) == 0 {
		return outbox.Event{}, fmt.Errorf("%w: no unfinished event of key %q", outbox.ErrNotFound, key)
	}
	return events[0], nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
