package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/logdelivery"
)

// LogDeliveredRetention is how long the log keeps its relays' per-minute counts of
// deliveries (Log.Delivered): Log.Trim deletes the minutes older than this, counted
// back from the latest minute any relay counted. A day: longer than any health window.
const LogDeliveredRetention = logdelivery.CountRetention

const (
	// countLogDelivered adds a step's deliveries to its cursor's count for the minute,
	// in the transaction that moves the cursor.
	countLogDelivered = `
INSERT INTO outbox_log_delivered (minute, cursor, delivered) VALUES (:minute, :cursor, :delivered)
ON CONFLICT (minute, cursor) DO UPDATE SET delivered = delivered + excluded.delivered`

	// logDeliveredSince sums the counts of every cursor from the minute :since on.
	logDeliveredSince = `SELECT coalesce(sum(delivered), 0) FROM outbox_log_delivered WHERE minute >= :since`

	// logDeliveredByMinute sums the counts of every cursor per minute, for the minutes
	// from :since up to :until: a range of the key's leading column.
	logDeliveredByMinute = `
SELECT minute, sum(delivered) FROM outbox_log_delivered
WHERE minute >= :since AND minute < :until
GROUP BY minute ORDER BY minute`

	// trimLogDelivered deletes the counts older than :keep (µs) before the latest
	// minute counted.
	trimLogDelivered = `
DELETE FROM outbox_log_delivered
WHERE minute < (SELECT max(minute) FROM outbox_log_delivered) - :keep`
)

// Delivered returns how many events the log's relays delivered (handed to their
// handler, which succeeded) from since on: the sum, over every cursor, of the minutes
// from the one that holds since, by the relays' Clock, to the latest. A window is
// whole minutes, so it counts up to a minute more than asked, never less. Events moved
// to the events table (failed, or pending behind their key) are not counted here but
// there, as Stats.Recent counts them; nor are events a relay passed by as out of its
// Types. Relays of different cursors that deliver the same events (to two
// destinations) each count them. Log.Trim deletes the minutes older than
// LogDeliveredRetention, so a window reaches no further back.
//
// Stats.Recent counts the events table's outcomes, which on the log layout are the
// log's failures only: add Delivered for the same window to Recent.Completed for the
// outbox's failure rate (the dashboard's Config.LogDelivered, outbox stats --layout=log).
func (l *Log) Delivered(ctx context.Context, since time.Time) (int64, error) {
	var n int64
	if err := l.db.QueryRowContext(ctx, logDeliveredSince, sql.Named("since", column.Micros(logdelivery.Minute(since)))).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox/sqlite: log: count deliveries: %w", err)
	}
	return n, nil
}

// DeliveredByMinute returns, per minute from the one that holds since up to until,
// how many events the log's relays delivered in it, as Delivered counts them (every
// cursor summed, minutes of the relays' Clock, cursors that deliver the same events
// each counting them): one bucket per minute with deliveries, oldest first, with
// Completed set and the rest zero; minutes without any are left out, and until's own
// minute is counted only when until is past its start. Log.Trim deletes the minutes
// older than LogDeliveredRetention, so a range reaches no further back.
//
// The store's outbox.Timeline counts the events table, which on the log layout holds
// the log's failures and the events moved behind them, not its deliveries: add these
// to its buckets' Completed for the outbox's throughput (the dashboard's
// Config.LogTimeline).
func (l *Log) DeliveredByMinute(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error) {
	rows, err := l.db.QueryContext(ctx, logDeliveredByMinute,
		sql.Named("since", column.Micros(logdelivery.Minute(since))), sql.Named("until", column.Micros(until)))
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log: count deliveries by minute: %w", err)
	}
	defer rows.Close()
	var buckets []outbox.TimelineBucket
	for rows.Next() {
		var minute, n int64
		if err := rows.Scan(&minute, &n); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: log: count deliveries by minute: %w", err)
		}
		buckets = append(buckets, outbox.TimelineBucket{Minute: column.FromMicros(minute), Completed: int(n)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log: count deliveries by minute: %w", err)
	}
	return buckets, nil
}
