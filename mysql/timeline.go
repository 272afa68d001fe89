package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
)

var (
	_ outbox.Timeline     = (*Store)(nil)
	_ outbox.KeyInspector = (*Store)(nil)
)

// timelineCompleted counts completions per minute from the completed range of the due
// index (state_at is completed_at there), index only.
const timelineCompleted = `
SELECT state_at DIV 60000000, COUNT(*) FROM {{table}}
WHERE status = 'completed' AND state_at >= :since AND state_at < :until
GROUP BY 1`

// timelineFailed counts failed events by the minute of their latest failure (the
// update that recorded it), from the failed range of failed_at (migration 3), index
// only: its cost follows the failed events of the window, not the table.
const timelineFailed = `
SELECT updated_at DIV 60000000, COUNT(*), COALESCE(SUM(state_at IS NULL), 0) FROM {{table}}
WHERE status = 'failed' AND updated_at >= :since AND updated_at < :until
GROUP BY 1`

// keyHead reads the first entry of the key in open_key, which holds only unfinished
// events.
const keyHead = `SELECT ` + eventColumns + ` FROM {{table}} WHERE open_key = :key ORDER BY seq LIMIT 1`

// render fills in the table of a statement used rarely enough to be rendered per call.
func (s *Store) render(text string) stmt {
	return compile(strings.ReplaceAll(text, "{{table}}", s.q.table))
}

// Timeline implements outbox.Timeline. Both counts read one snapshot.
func (s *Store) Timeline(ctx context.Context, q outbox.TimelineQuery) ([]outbox.TimelineBucket, error) {
	if q.Until.Before(q.Since) {
		return nil, &outbox.FieldError{Field: "TimelineQuery.Until", Problem: "must not be before Since"}
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
	}
	defer tx.Rollback()
	completedSince := q.Since
	if q.CompletedSince.After(completedSince) {
		completedSince = q.CompletedSince
	}
	buckets := map[int64]*outbox.TimelineBucket{}
	bucket := func(minute int64) *outbox.TimelineBucket {
		b := buckets[minute]
		if b == nil {
			b = &outbox.TimelineBucket{Minute: column.FromMicros(minute * 60_000_000)}
			buckets[minute] = b
		}
		return b
	}
	query, qa := s.render(timelineCompleted).bind(args{"since": column.Micros(completedSince), "until": column.Micros(q.Until)})
	rows, err := tx.QueryContext(ctx, query, qa...)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
	}
	for rows.Next() {
		var minute, n int64
		if err := rows.Scan(&minute, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
		}
		bucket(minute).Completed = int(n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
	}
	query, qa = s.render(timelineFailed).bind(args{"since": column.Micros(q.Since), "until": column.Micros(q.Until)})
	rows, err = tx.QueryContext(ctx, query, qa...)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var minute, n, givenUp int64
		if err := rows.Scan(&minute, &n, &givenUp); err != nil {
			return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
		}
		b := bucket(minute)
		b.Failed, b.GivenUp = int(n), int(givenUp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/mysql: timeline: %w", err)
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
	query, qa := s.render(keyHead).bind(args{"key": key})
	rows, err := s.db.QueryContext(ctx, query, qa...)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/mysql: key head %q: %w", key, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/mysql: key head %q: %w", key, err)
	}
	if len(events) == 0 {
		return outbox.Event{}, fmt.Errorf("%w: no unfinished event of key %q", outbox.ErrNotFound, key)
	}
	return events[0], nil
}
