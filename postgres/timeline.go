package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

var (
	_ outbox.Timeline     = (*Store)(nil)
	_ outbox.KeyInspector = (*Store)(nil)
)

// timeline counts completions per minute from the completed index (completed_at, for
// cleanup), and failed events by the minute of their latest failure (the update that
// recorded it) from the failed index: its cost follows the events completed in the
// window and the failed events, never the table.
const timeline = `
SELECT floor(extract(epoch FROM completed_at) / 60)::bigint, count(*), 0::bigint, 0::bigint
FROM {{table}}
WHERE status = 'completed' AND completed_at >= @completed_since AND completed_at < @until
GROUP BY 1
UNION ALL
SELECT floor(extract(epoch FROM updated_at) / 60)::bigint, 0, count(*), count(*) FILTER (WHERE next_attempt_at IS NULL)
FROM {{table}}
WHERE status = 'failed' AND updated_at >= @since AND updated_at < @until
GROUP BY 1`

// keyHead reads the first entry of the key in the ordering-key index.
const keyHead = `SELECT ` + eventColumns + ` FROM {{table}}
WHERE ordering_key = @key AND ordering_key IS NOT NULL AND status <> 'completed'
ORDER BY seq LIMIT 1`

func (s *Store) render(sql string) string {
	return strings.ReplaceAll(sql, "{{table}}", newNames(s.cfg).Table)
}

// Timeline implements outbox.Timeline.
func (s *Store) Timeline(ctx context.Context, q outbox.TimelineQuery) ([]outbox.TimelineBucket, error) {
	if q.Until.Before(q.Since) {
		return nil, &outbox.FieldError{Field: "TimelineQuery.Until", Problem: "must not be before Since"}
	}
	rows, err := s.pool.Query(ctx, s.render(timeline), pgx.NamedArgs{"since": q.Since, "until": q.Until, "completed_since": later(q.Since, q.CompletedSince)})
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: timeline: %w", err)
	}
	defer rows.Close()
	buckets := map[int64]*outbox.TimelineBucket{}
	for rows.Next() {
		var minute, completed, failed, givenUp int64
		if err := rows.Scan(&minute, &completed, &failed, &givenUp); err != nil {
			return nil, fmt.Errorf("outbox/postgres: timeline: %w", err)
		}
		b := buckets[minute]
		if b == nil {
			b = &outbox.TimelineBucket{Minute: time.Unix(minute*60, 0).UTC()}
			buckets[minute] = b
		}
		b.Completed += int(completed)
		b.Failed += int(failed)
		b.GivenUp += int(givenUp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/postgres: timeline: %w", err)
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
	rows, err := s.pool.Query(ctx, s.render(keyHead), pgx.NamedArgs{"key": key})
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/postgres: key head %q: %w", key, err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return outbox.Event{}, fmt.Errorf("outbox/postgres: key head %q: %w", key, err)
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
