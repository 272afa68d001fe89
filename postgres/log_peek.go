package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

// Peek lists up to limit (> 0) of the committed events that the cursor of the given
// name has not passed, oldest first in the order its relays would read them: what
// Waiting counts, for an operator to see which events wait. It reads as a LogCursor
// reads, from the stored position, and writes nothing: unlike Cursor, it creates no
// cursor (one made and never read would hold Retain back for good), and it acknowledges
// nothing. For a name with no cursor it lists what a relay starting on it would read
// first: the oldest events the log holds. A listing is a moment's: a relay of the
// cursor may deliver the events meanwhile.
//
// On a log of more than one shard the cursor has a position per shard, and each shard's
// events come in that shard's read order; the shards' events are interleaved by
// creation time (the next event listed is the earliest created of the shards' next
// ones, the lower shard first on a tie). A relay reads the shards independently, so no
// order holds across them; this one keeps each shard's and reads as time does.
func (l *Log) Peek(ctx context.Context, cursor string, limit int) ([]LogEvent, error) {
	if cursor == "" {
		return nil, fmt.Errorf("%w: log peek: cursor name must not be empty", outbox.ErrInvalid)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("%w: log peek: limit must be positive, got %d", outbox.ErrInvalid, limit)
	}
	shards := make([][]LogEvent, l.cfg.Shards)
	for shard := range shards {
		c := &LogCursor{log: l, name: l.cursorRow(cursor, shard), shard: int16(shard)}
		events, err := c.peek(ctx, limit)
		if err != nil {
			return nil, err
		}
		shards[shard] = events
	}
	return mergeByCreated(shards, limit), nil
}

// peek reads up to limit events after the cursor's stored position, or after the
// start of the log when it has no row, without creating or moving it.
func (c *LogCursor) peek(ctx context.Context, limit int) ([]LogEvent, error) {
	pos, err := c.loadFrom(ctx, c.log.pool)
	if errors.Is(err, pgx.ErrNoRows) {
		pos, err = logPosition{snapshot: firstSnapshot}, nil
	}
	if err != nil {
		return nil, err
	}
	var events []LogEvent
	for {
		b, err := c.readFrom(ctx, c.log.pool, pos, limit-len(events))
		if err != nil {
			return nil, err
		}
		events = append(events, b.Events...)
		// A position in the middle of a pair reads only the pair's rest; what committed
		// after the pair's later snapshot is the next pair, read from where the rest
		// ends. A read of a new pair reads up to now, and is the last.
		if len(events) == limit || pos.next == "" {
			return events, nil
		}
		pos = b.to
	}
}

// mergeByCreated interleaves the shards' lists, each in its own order, by the creation
// time of their next events (the lower shard first on a tie), up to limit events.
func mergeByCreated(shards [][]LogEvent, limit int) []LogEvent {
	if len(shards) == 1 {
		return shards[0]
	}
	var out []LogEvent
	for len(out) < limit {
		next := -1
		for i, s := range shards {
			if len(s) > 0 && (next < 0 || s[0].CreatedAt.Before(shards[next][0].CreatedAt)) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		out = append(out, shards[next][0])
		shards[next] = shards[next][1:]
	}
	return out
}
