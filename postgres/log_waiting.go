package postgres

import (
	"context"
	"fmt"
	"time"
)

// logWaiting counts the events of shard $2 that cursor $1 has not passed and that are
// committed now, and finds the oldest one's created_at. A name with no cursor is at
// the start of the log (firstSnapshot), where a new cursor of that name would begin. They are those visible in a
// new snapshot and not in the stored one, and, while a pair is read in parts, also
// the rest of the pair: visible in its later snapshot, not in the stored one, and after
// the last event delivered of it. "Not visible in" is the read's two places (readLog),
// written as one condition: nothing here needs the events in order.
const logWaiting = `
WITH pos AS MATERIALIZED (
    SELECT coalesce(c.snapshot, '` + firstSnapshot + `')::pg_snapshot AS prev, c.next::pg_snapshot AS mid,
           coalesce(c.after_xid, '0') AS after_xid, coalesce(c.after_seq, 0) AS after_seq,
           pg_current_snapshot() AS now
    FROM (SELECT) AS one LEFT JOIN {{cursors}} c ON c.name = $1
), spans AS (
    SELECT prev AS seen, mid AS upto, after_xid, after_seq FROM pos WHERE mid IS NOT NULL
    UNION ALL
    SELECT coalesce(mid, prev), now, '0'::xid8, 0 FROM pos
)
SELECT count(e.created_at), min(e.created_at)
FROM spans s CROSS JOIN LATERAL (
    SELECT created_at FROM {{log}}
    WHERE shard = $2::smallint
        AND (xid >= pg_snapshot_xmax(s.seen) OR xid = ANY(ARRAY(SELECT pg_snapshot_xip(s.seen))))
        AND xid < pg_snapshot_xmax(s.upto)
        AND (xid, seq) > (s.after_xid, s.after_seq)
        AND pg_visible_in_snapshot(xid, s.upto)
) e`

// Waiting counts the committed events the cursor has not passed, by its stored
// position (moved by any reader of its name), and returns when the oldest of them was
// created (zero when none wait). It reads the events past the position, so it costs
// what a read of all of them would, without their columns: a gauge's refresh, not a
// loop's.
func (c *LogCursor) Waiting(ctx context.Context) (events int64, oldest time.Time, err error) {
	return c.log.waiting(ctx, c.name, c.shard)
}

// Waiting counts the committed events that the cursor of the given name has not
// passed, in every shard, and returns when the oldest of them was created (zero when
// none wait): what waits on the log for the relays of that cursor (LogRelay.Waiting),
// for a gauge or a dashboard beside the events table's counts. Unlike Cursor, it
// creates no cursor. For a name with none (no relay of that cursor has run yet) it
// counts what a relay starting on it would read: every committed event the log holds,
// so that events appended before any relay ran are not hidden. It reads every waiting
// event's key (see LogCursor.Waiting).
func (l *Log) Waiting(ctx context.Context, cursor string) (events int64, oldest time.Time, err error) {
	for shard := range l.cfg.Shards {
		n, at, err := l.waiting(ctx, l.cursorRow(cursor, shard), int16(shard))
		if err != nil {
			return 0, time.Time{}, err
		}
		events += n
		if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	return events, oldest, nil
}

// waiting runs logWaiting for one cursor row (a name, with "/shard" on a sharded log).
func (l *Log) waiting(ctx context.Context, row string, shard int16) (events int64, oldest time.Time, err error) {
	var at *time.Time
	if err := l.pool.QueryRow(ctx, l.n.render(logWaiting), row, shard).Scan(&events, &at); err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox/postgres: log cursor %q: count what waits: %w", row, err)
	}
	if at != nil {
		oldest = at.UTC()
	}
	return events, oldest, nil
}
