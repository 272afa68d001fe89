// Package redisinbox reads the Redis Streams entries redissink added, as a member of a
// consumer group, acknowledging (XACK) an entry only after the application's effect for
// it has succeeded: Consume hands each entry to a callback, one at a time in each
// stream's order.
//
// What becomes of an entry:
//
//	callback returned nil                   XACK
//	callback failed                         left pending for this consumer: Consume returns the error,
//	                                        and the next Consume hands it over first
//	effect applied, XACK lost               handed over again (the next Consume, or a consumer
//	                                        claiming it with Config.ClaimIdle)
//	pending, trimmed away (MAXLEN) unread   XACK, without the callback
//
// So the callback must be idempotent. An inbox inside it, keyed by Message.EventID (the
// entry's id field, redissink.FieldID), makes each event's effect happen once:
//
//	cfg := redisinbox.Config{Streams: []string{"outbox.order.created"}, Group: "billing", Consumer: "billing-1"}
//	err := redisinbox.Consume(ctx, rdb, cfg, func(ctx context.Context, m redisinbox.Message) error {
//		_, err := ib.Process(ctx, m.EventID(), func(tx *sql.Tx) error { return apply(ctx, tx, m) })
//		return err
//	})
package redisinbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/redissink"
)

// Defaults of Config.
const (
	// DefaultCount is how many entries one read asks for, per stream.
	DefaultCount = 100
	// DefaultBlock is how long one read waits for new entries.
	DefaultBlock = 2 * time.Second
)

// Config says what Consume reads, and as whom.
type Config struct {
	// Streams are the stream keys to read. Required. On Redis Cluster, one read must
	// stay within a slot: give one stream per Consume, or streams sharing a hash tag.
	Streams []string
	// Group is the consumer group, created (from the start of each stream) when it does
	// not exist. Required.
	Group string
	// Consumer names this reader within the group; entries handed to it and not yet
	// acknowledged stay its own until acknowledged. Required.
	Consumer string
	// Count bounds the entries read per stream and call. Defaults to DefaultCount.
	Count int64
	// Block is how long one read waits for new entries, and so how late Consume notices
	// that ctx has ended. Defaults to DefaultBlock.
	Block time.Duration
	// ClaimIdle, when positive, makes Consume take over entries that another consumer of
	// the group was handed and has not acknowledged for this long (XAUTOCLAIM): a
	// consumer that died leaves its entries to the others. It should be well above the
	// time fn takes. Zero, the default, never takes any.
	ClaimIdle time.Duration
}

func (c Config) withDefaults() Config {
	c.Count = cmp.Or(c.Count, DefaultCount)
	c.Block = cmp.Or(c.Block, DefaultBlock)
	return c
}

// Validate reports the first field of c (after defaults) that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field, problem string) error {
		return &outbox.FieldError{Field: "redisinbox.Config." + field, Problem: problem}
	}
	switch {
	case len(c.Streams) == 0:
		return bad("Streams", "must name at least one stream")
	case c.Group == "":
		return bad("Group", "must not be empty")
	case c.Consumer == "":
		return bad("Consumer", "must not be empty")
	case c.Count < 0:
		return bad("Count", fmt.Sprintf("must not be negative, got %d", c.Count))
	case c.Block < time.Millisecond:
		return bad("Block", fmt.Sprintf("must be at least 1ms, got %s", c.Block))
	case c.ClaimIdle < 0:
		return bad("ClaimIdle", fmt.Sprintf("must not be negative, got %s", c.ClaimIdle))
	}
	for i, s := range c.Streams {
		if s == "" {
			return bad(fmt.Sprintf("Streams[%d]", i), "must not be empty")
		}
	}
	return nil
}

// Message is one stream entry as Consume hands it to its callback.
type Message struct {
	Stream string
	ID     string // the entry ID, "<ms>-<n>"
	Values map[string]any
}

// EventID returns the entry's id field (redissink.FieldID): the ID of the event it
// carries, to deduplicate on. It is empty for an entry the sink did not add.
func (m Message) EventID() string { s, _ := m.Values[redissink.FieldID].(string); return s }

// Envelope decodes the entry's envelope field.
func (m Message) Envelope() (sink.Envelope, error) {
	var env sink.Envelope
	s, _ := m.Values[redissink.FieldEnvelope].(string)
	if err := json.Unmarshal([]byte(s), &env); err != nil {
		return env, fmt.Errorf("redisinbox: entry %s of %s is not an outbox envelope: %w", m.ID, m.Stream, err)
	}
	return env, nil
}

// Consume reads the streams as a member of a consumer group and calls fn for each
// entry, one at a time in each stream's order, acknowledging (XACK) an entry only after
// fn has returned nil for it. It runs until ctx ends (returning nil) or fn or Redis
// fails (returning the error).
//
// Entries read but not acknowledged stay pending for this consumer: Consume begins
// with them, before new entries, so that after fn failed and Consume returned, the
// next Consume hands the failed entry to fn first. An entry whose effect was applied but
// whose acknowledgement was lost is handed over again, so fn must be idempotent; an
// inbox keyed by Message.EventID makes its effects exactly once. With ClaimIdle, the
// entries another consumer left unacknowledged are handled too, before new ones. Pending entries that
// were trimmed away (MAXLEN) before they were handled cannot be read: Consume
// acknowledges them without calling fn.
func Consume(ctx context.Context, rdb redis.UniversalClient, cfg Config, fn func(ctx context.Context, m Message) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	for _, s := range cfg.Streams {
		err := rdb.XGroupCreateMkStream(ctx, s, cfg.Group, "0").Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return fmt.Errorf("redisinbox: create group %s on %s: %w", cfg.Group, s, err)
		}
	}
	handle := func(stream string, m redis.XMessage) error {
		if len(m.Values) > 0 {
			if err := fn(ctx, Message{Stream: stream, ID: m.ID, Values: m.Values}); err != nil {
				return fmt.Errorf("redisinbox: entry %s of %s (event %v): %w", m.ID, stream, m.Values[redissink.FieldID], err)
			}
		}
		// The acknowledgement outlives ctx: an effect that happened should be recorded.
		if err := rdb.XAck(context.WithoutCancel(ctx), stream, cfg.Group, m.ID).Err(); err != nil {
			return fmt.Errorf("redisinbox: acknowledge %s of %s: %w", m.ID, stream, err)
		}
		return nil
	}
	claim := func() error {
		for _, st := range cfg.Streams {
			for start := "0-0"; ; {
				msgs, next, err := rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
					Stream: st, Group: cfg.Group, Consumer: cfg.Consumer, MinIdle: cfg.ClaimIdle, Start: start, Count: cfg.Count,
				}).Result()
				if err != nil {
					return fmt.Errorf("redisinbox: claim idle entries of %s: %w", st, err)
				}
				for _, m := range msgs {
					if err := handle(st, m); err != nil {
						return err
					}
				}
				if next == "" || next == "0-0" {
					break
				}
				start = next
			}
		}
		return nil
	}
	ids := make([]string, len(cfg.Streams))
	for i := range ids {
		ids[i] = "0" // this consumer's pending entries first
	}
	for ctx.Err() == nil {
		args := &redis.XReadGroupArgs{
			Group: cfg.Group, Consumer: cfg.Consumer, Count: cfg.Count,
			Streams: append(append([]string{}, cfg.Streams...), ids...), Block: -1,
		}
		backlog := ids[0] != ">" // reading pending entries: no wait
		if !backlog {
			args.Block = cfg.Block
			if cfg.ClaimIdle > 0 {
				if err := claim(); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
		}
		res, err := rdb.XReadGroup(ctx, args).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("redisinbox: read %v: %w", cfg.Streams, err)
		}
		n := 0
		for _, st := range res {
			for _, m := range st.Messages {
				n++
				if err := handle(st.Stream, m); err != nil {
					return err
				}
				if backlog {
					ids[indexOf(cfg.Streams, st.Stream)] = m.ID // page on through the pending entries
				}
			}
		}
		if backlog && n == 0 {
			for i := range ids {
				ids[i] = ">" // pending entries done: new entries from now on
			}
		}
	}
	return nil
}

func indexOf(ss []string, s string) int {
	for i, v := range ss {
		if v == s {
			return i
		}
	}
	return 0
}
