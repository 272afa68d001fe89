package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/logdelivery"
)

// LogDeliveredRetention is how long the log keeps its relays' per-minute counts of
// deliveries (Log.Delivered): Log.Retain deletes the minutes older than this, counted
// back from the latest minute any relay counted. A day: longer than any health window.
const LogDeliveredRetention = logdelivery.CountRetention

// countDelivered is the part of a step's acknowledgement (ackOrAbort) that adds the
// step's deliveries to its cursor row's count for the minute $10, by $11. It runs in
// the acknowledgement's statement: when the cursor had moved, the statement fails, and
// the count with it. Parameters after ackCursor's nine: the minute, the count.
const countDelivered = `, counted AS (
    INSERT INTO {{delivered}} AS d (minute, cursor, delivered) VALUES ($10, $1, $11)
    ON CONFLICT (minute, cursor) DO UPDATE SET delivered = d.delivered + excluded.delivered
)`

// logDeliveredSince sums the counts of every cursor row from the minute $1 on.
const logDeliveredSince = `SELECT coalesce(sum(delivered), 0)::bigint FROM {{delivered}} WHERE minute >= $1`

// logDeliveredByMinute sums the counts of every cursor row per minute, for the minutes
// from $1 up to $2: a range of the key's leading column.
const logDeliveredByMinute = `
SELECT minute, sum(delivered)::bigint FROM {{delivered}}
WHERE minute >= $1 AND minute < $2
GROUP BY minute ORDER BY minute`

// retainDelivered deletes the counts older than $1 before the latest minute counted.
const retainDelivered = `
DELETE FROM {{delivered}}
WHERE minute < (SELECT max(minute) FROM {{delivered}}) - make_interval(secs => $1)`

// Delivered returns how many events the log's relays delivered (handed to their
// handler, which succeeded) from since on: the sum, over every cursor row (each shard
// of each cursor name), of the minutes from the one that holds since, by the relays'
// Clock, to the latest. A window is whole minutes, so it counts up to a minute more
// than asked, never less. Events moved to the events table (failed, or pending behind
// their key) are not counted here but there, as Stats.Recent counts them; nor are
// events a relay passed by as out of its Types. Relays of different cursor names that
// deliver the same events (to two destinations) each count them. Log.Retain deletes
// the minutes older than LogDeliveredRetention, so a window reaches no further back.
//
// Stats.Recent counts the events table's outcomes, which on the log layout are the
// log's failures only: add Delivered for the same window to Recent.Completed for the
// outbox's failure rate (the dashboard's Config.LogDelivered, outbox stats --layout=log).
func (l *Log) Delivered(ctx context.Context, since time.Time) (int64, error) {
	var n int64
	if err := l.pool.QueryRow(ctx, l.n.render(logDeliveredSince), logdelivery.Minute(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox/postgres: log: count deliveries: %w", err)
	}
	return n, nil
}

// DeliveredByMinute returns, per minute from the one that holds since up to until,
// how many events the log's relays delivered in it, as Delivered counts them (every
// cursor row summed, minutes of the relays' Clock, cursor names that deliver the same
// events each counting them): one bucket per minute with deliveries, oldest first,
// with Completed set and the rest zero; minutes without any are left out, and until's
// own minute is counted only when until is past its start. Log.Retain deletes the
// minutes older than LogDeliveredRetention, so a range reaches no further back.
//
// The store's outbox.Timeline counts the events table, which on the log layout holds
// the log's failures and the events moved behind them, not its deliveries: add these
// to its buckets' Completed for the outbox's throughput (the dashboard's
// Config.LogTimeline).
func (l *Log) DeliveredByMinute(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error) {
	rows, err := l.pool.Query(ctx, l.n.render(logDeliveredByMinute), logdelivery.Minute(since), until)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: log: count deliveries by minute: %w", err)
	}
	buckets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outbox.TimelineBucket, error) {
		var b outbox.TimelineBucket
		var n int64
		err := row.Scan(&b.Minute, &n)
		b.Minute, b.Completed = b.Minute.UTC(), int(n)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: log: count deliveries by minute: %w", err)
	}
	return buckets, nil
}

// retainDelivered deletes the counts of deliveries past LogDeliveredRetention, for
// Retain. It reads no clock: its bound is the latest minute any relay counted.
func (l *Log) retainDelivered(ctx context.Context, q logQuerier) error {
	if _, err := q.Exec(ctx, l.n.render(retainDelivered), LogDeliveredRetention.Seconds()); err != nil {
		return fmt.Errorf("outbox/postgres: retain log: delete old counts of deliveries: %w", err)
	}
	return nil
}
