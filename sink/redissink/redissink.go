// Package redissink appends outbox events to Redis Streams. Each event becomes one
// entry (XADD) in a stream named by a template ("outbox.{type}"), with the fields
// id (the event ID), type, envelope (the JSON envelope of package sink) and, when the
// event's metadata carries them, traceparent and tracestate.
//
// # Deduplication
//
// The entry is added by a Lua script that Redis runs atomically: it looks the event ID
// up in a sorted set beside the stream, adds the entry only when the ID is not there,
// and records it with Redis's own clock. An event delivered again within
// Config.DedupWindow (its acknowledgement was lost, the relay died before recording the
// outcome) is therefore refused by Redis itself and counts as delivered. IDs older than
// the window are dropped from the set at each add, which bounds its size to the events
// of one window.
//
// Why not an entry ID derived from the event's sequence, so that XADD refuses a repeat
// on its own? Redis accepts only IDs above the stream's last one, and the outbox does
// not deliver in sequence order: a higher priority goes first, and a failed event is
// retried after later events have been added. Such an event would be refused as if it
// were a repeat, and lost. TestSequenceIDsWouldRefuseARetriedEvent shows it.
//
// # Durability
//
// An entry counts as delivered once Redis has answered the script. Whether it survives
// a crash of Redis is Redis's persistence setting: with appendonly yes and appendfsync
// always nothing acknowledged is lost; with the usual everysec up to a second of
// acknowledged entries can be.
//
// The dedup set of a stream has the key "{<stream>}:outbox-dedup": the braces make it
// hash to the stream's own slot, so the script runs on Redis Cluster too. Stream names
// never contain braces (they are escaped from the event's values).
package redissink

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// Defaults of Config.
const (
	DefaultStream      = "outbox.{type}"
	DefaultDedupWindow = time.Hour
)

// Field names of a stream entry.
const (
	FieldID       = "id"       // the event ID
	FieldType     = "type"     // the event type
	FieldEnvelope = "envelope" // the JSON envelope
)

var traceKeys = []string{"traceparent", "tracestate"}

// Config tunes a Sink.
type Config struct {
	// Stream is the stream key template: {type}, {entity_id} and {user_id} are replaced
	// by the event's values, with '{' and '}' turned into '_'. Defaults to DefaultStream.
	Stream string
	// MaxLen, when positive, trims each stream to about this many entries as entries
	// are added (XADD MAXLEN ~): Redis trims whole nodes, so a stream may hold somewhat
	// more. Zero keeps every entry. Defaults to 0.
	MaxLen int64
	// DedupWindow is how long an event ID is remembered, to refuse the event if it is
	// delivered again. It must cover the longest time between a delivery and its
	// repeat: the processor's lease, plus its retry delays when a failed attempt may
	// have landed. Memory is about 100 bytes per event of the window. Defaults to
	// DefaultDedupWindow.
	DedupWindow time.Duration
}

func (c Config) withDefaults() Config {
	c.Stream = cmp.Or(c.Stream, DefaultStream)
	c.DedupWindow = cmp.Or(c.DedupWindow, DefaultDedupWindow)
	return c
}

// Validate reports the first field of c (after defaults) that cannot work.
func (c Config) Validate() error {
	_, err := c.withDefaults().template()
	return err
}

func (c Config) template() (sink.Template, error) {
	tmpl, err := sink.ParseTemplate(c.Stream)
	if err != nil {
		return tmpl, &outbox.FieldError{Field: "redissink.Config.Stream", Problem: err.Error()}
	}
	if c.MaxLen < 0 {
		return tmpl, &outbox.FieldError{Field: "redissink.Config.MaxLen", Problem: fmt.Sprintf("must not be negative, got %d", c.MaxLen)}
	}
	if c.DedupWindow < time.Millisecond {
		return tmpl, &outbox.FieldError{Field: "redissink.Config.DedupWindow", Problem: fmt.Sprintf("must be at least 1ms, got %s", c.DedupWindow)}
	}
	return tmpl, nil
}

//go:embed xadd.lua
var xaddSource string

var xadd = redis.NewScript(xaddSource)

// Sink is an outbox.BatchHandler appending to Redis Streams. It is safe for
// concurrent use.
type Sink struct {
	rdb    redis.UniversalClient
	cfg    Config
	stream sink.Template
}

var _ outbox.BatchHandler = (*Sink)(nil)

// New returns a Sink writing through rdb, which the caller owns (configures, closes).
// It fails when cfg holds a value that cannot work.
func New(rdb redis.UniversalClient, cfg Config) (*Sink, error) {
	if rdb == nil {
		return nil, &outbox.FieldError{Field: "redissink.New", Problem: "client must not be nil"}
	}
	cfg = cfg.withDefaults()
	tmpl, err := cfg.template()
	if err != nil {
		return nil, err
	}
	return &Sink{rdb: rdb, cfg: cfg, stream: tmpl}, nil
}

func escape(v string) string {
	if v == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '{' || r == '}' {
			return '_'
		}
		return r
	}, v)
}

// Stream returns the stream e is added to.
func (s *Sink) Stream(e outbox.Event) string { return s.stream.Expand(e, escape) }

// DedupKey returns the key of the sorted set that remembers the event IDs added to
// stream.
func DedupKey(stream string) string { return "{" + stream + "}:outbox-dedup" }

// Handle adds one event.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch adds every event of the batch in one pipeline; errs[i] is nil when
// events[i] is in its stream, added now or found already added within the window.
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	type call struct {
		i    int
		keys []string
		args []any
	}
	calls := make([]call, 0, len(events))
	for i, e := range events {
		env, err := sink.Encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		stream := s.Stream(e)
		args := []any{e.ID, s.cfg.DedupWindow.Milliseconds(), s.cfg.MaxLen,
			FieldID, e.ID, FieldType, e.Type, FieldEnvelope, env}
		for _, k := range traceKeys {
			if v, ok := e.Metadata[k]; ok && v != "" {
				args = append(args, k, v)
			}
		}
		calls = append(calls, call{i: i, keys: []string{stream, DedupKey(stream)}, args: args})
	}
	// Two rounds at most: the second after loading the script into a Redis that has
	// lost it (restarted, or SCRIPT FLUSH).
	for round := 0; len(calls) > 0 && round < 2; round++ {
		if round > 0 {
			if err := xadd.Load(ctx, s.rdb).Err(); err != nil {
				for _, c := range calls {
					errs[c.i] = fmt.Errorf("redissink: load script: %w", err)
				}
				return errs
			}
		}
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for j, c := range calls {
			cmds[j] = xadd.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		var again []call
		for j, c := range calls {
			err := cmds[j].Err()
			switch {
			case err == nil:
				errs[c.i] = nil
			case redis.HasErrorPrefix(err, "NOSCRIPT") && round == 0:
				again = append(again, c)
			default:
				errs[c.i] = classify(fmt.Errorf("redissink: add to %s: %w", c.keys[0], err))
			}
		}
		calls = again
	}
	return errs
}

// classify marks permanent what the same event cannot get past: the stream's key holds
// another type. Redis errors are told apart by their code, the reply's first word;
// every other error (connection lost, OOM, LOADING, READONLY during a failover) is
// retried.
func classify(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && redis.HasErrorPrefix(err, "WRONGTYPE") {
		return outbox.Permanent(err)
	}
	return err
}
