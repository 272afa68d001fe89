// Package redissink appends outbox events to Redis Streams. Each event becomes one
// entry (XADD) in a stream named by a template ("outbox.{type}"), with the fields
// id (the event ID), type, envelope (the JSON envelope of package sink) and, when the
// event's metadata carries them, traceparent, tracestate and baggage. A stream keeps
// the order its entries were added in; across streams there is none, so with the
// default "outbox.{type}" a key's create and its updates land in different streams. A
// stream name without {type} ("outbox.events") keeps all of a key's events in order.
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	Redis answered the add script (added, or already
//	  added within DedupWindow)                        delivered
//	connection refused, name not resolved, or no
//	  answer (timeout, connection cut) and no answer
//	  to a PING within Config.ProbeTimeout either;
//	  LOADING, MASTERDOWN, CLUSTERDOWN, BUSY           outbox.Unavailable: delivery held, no attempt spent
//	password or user refused (WRONGPASS, NOAUTH),
//	  a command the user may not run (NOPERM)          held: outbox.ReasonCredentials
//	a stream key the user may not write (NOPERM)       held, for that stream only: outbox.ReasonCredentials
//	database index the server does not have            held: ReasonNoDatabase
//	out of memory (OOM), a read-only replica           held: ReasonOutOfMemory, ReasonReadOnly
//	the stream key holds another type (WRONGTYPE)      permanent: given up
//	no answer while Redis answers PING, other errors   retried
//
// An event counts as delivered only when the script's reply for it came back: an error
// of the connection (refused, its handshake failed) leaves every command of the
// pipeline without a reply, and fails them all.
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
//
// # Consumers
//
// The receiving side is package inbox/redisinbox: a consumer group reader that
// acknowledges an entry only after the application's effect succeeded, and reads the
// fields named here (FieldID is its deduplication key).
//
// # CloudEvents
//
// With Config.Envelope set to a CloudEvents format (Redis Streams have no CloudEvents
// binding; this follows the Kafka binding, an entry's fields for a record's headers),
// every entry still has the id and type fields, and: in the structured mode, the
// event's CloudEvents JSON document in the envelope field and content-type:
// application/cloudevents+json; in the binary mode, the payload in the data field,
// content-type: application/json, and each other context attribute in a field named
// ce_ and the attribute (ce_specversion, ce_id, ce_source, ce_type, ce_subject,
// ce_time, ce_outboxattempt, …).
package redissink

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// Defaults of Config.
const (
	DefaultStream       = "outbox.{type}"
	DefaultDedupWindow  = time.Hour
	DefaultProbeTimeout = 2 * time.Second
)

// Field names of a stream entry.
const (
	FieldID       = "id"       // the event ID
	FieldType     = "type"     // the event type
	FieldEnvelope = "envelope" // the JSON envelope; with EnvelopeCloudEventsStructured, the CloudEvents JSON document
	// With a CloudEvents envelope: the media type of the entry's envelope (structured:
	// application/cloudevents+json) or data (binary: application/json, the
	// datacontenttype attribute).
	FieldContentType = "content-type"
	FieldData        = "data" // binary CloudEvents: the payload; absent when there is none
	// CloudEventsPrefix prefixes the fields of a binary-mode CloudEvent's attributes:
	// ce_id, ce_source, ce_type, …
	CloudEventsPrefix = "ce_"
)

// Reasons of the destination faults the sink reports beside the outbox.Reason… ones.
const (
	ReasonNoDatabase  = "database index does not exist"
	ReasonOutOfMemory = "out of memory"
	ReasonReadOnly    = "read-only replica"
)

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
	// ProbeTimeout bounds the PING the sink sends after an add got no answer (a
	// timeout, a connection cut): no answer within it either and the events are
	// reported unavailable, an answer and they are retried. Defaults to
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Envelope is what an entry carries besides its id and type fields:
	// sink.EnvelopeOutbox (the default: the JSON envelope of package sink in the
	// envelope field), sink.EnvelopeCloudEventsStructured (the CloudEvents JSON
	// document in the envelope field, content-type: application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload in the data field, content-type:
	// application/json, each other context attribute in a ce_ field). Redis has no
	// CloudEvents binding; this follows the Kafka one, fields for headers.
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

func (c Config) withDefaults() Config {
	c.Stream = cmp.Or(c.Stream, DefaultStream)
	c.DedupWindow = cmp.Or(c.DedupWindow, DefaultDedupWindow)
	c.ProbeTimeout = cmp.Or(c.ProbeTimeout, DefaultProbeTimeout)
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
	if c.ProbeTimeout < 0 {
		return tmpl, &outbox.FieldError{Field: "redissink.Config.ProbeTimeout", Problem: fmt.Sprintf("must not be negative, got %s", c.ProbeTimeout)}
	}
	if err := sink.CheckEnvelope("redissink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return tmpl, err
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
	enc    sink.Encoder
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
	return &Sink{rdb: rdb, cfg: cfg, stream: tmpl, enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}, nil
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
// Redis answered that events[i] is in its stream, added now or found already added
// within the window. An error's text is fit for a store whatever Redis answered (see
// outbox.CleanError).
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	type call struct {
		i    int
		keys []string
		args []any
	}
	calls := make([]call, 0, len(events))
	for i, e := range events {
		msg, err := s.enc.Encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		stream := s.Stream(e)
		args := []any{e.ID, s.cfg.DedupWindow.Milliseconds(), s.cfg.MaxLen, FieldID, e.ID, FieldType, e.Type}
		switch {
		case s.enc.Format() == sink.EnvelopeOutbox:
			args = append(args, FieldEnvelope, msg.Body)
		case !msg.Binary:
			args = append(args, FieldContentType, msg.ContentType, FieldEnvelope, msg.Body)
		default:
			if msg.ContentType != "" {
				args = append(args, FieldContentType, msg.ContentType)
			}
			for _, a := range msg.Attributes {
				args = append(args, CloudEventsPrefix+a.Name, a.Value)
			}
			if msg.Body != nil {
				args = append(args, FieldData, msg.Body)
			}
		}
		for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
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
					errs[c.i] = classify(c.keys[0], fmt.Errorf("redissink: load script: %w", err))
				}
				break
			}
		}
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for j, c := range calls {
			cmds[j] = xadd.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		// A command's own error is its reply's; Exec's may be the connection's
		// (refused, handshake refused), which leaves the commands without reply
		// and without error.
		_, execErr := pipe.Exec(ctx)
		var again []call
		for j, c := range calls {
			err := cmds[j].Err()
			if err == nil && !added(cmds[j].Val()) {
				err = execErr
				if err == nil {
					err = fmt.Errorf("unexpected reply %.100q", fmt.Sprint(cmds[j].Val()))
				}
			}
			switch {
			case err == nil:
				errs[c.i] = nil
			case redis.HasErrorPrefix(err, "NOSCRIPT") && round == 0:
				again = append(again, c)
			default:
				errs[c.i] = classify(c.keys[0], fmt.Errorf("redissink: add to %s: %w", c.keys[0], err))
			}
		}
		calls = again
	}
	s.probeIfSilent(ctx, errs)
	for i, err := range errs {
		errs[i] = outbox.CleanError(err) // a server's answer may hold anything
	}
	return errs
}

// added reports whether v is a reply of the add script: the new entry's ID, or 0 for
// an event already added.
func added(v any) bool {
	switch v := v.(type) {
	case string:
		ms, seq, ok := strings.Cut(v, "-")
		return ok && ms != "" && seq != "" && strings.Trim(ms+seq, "0123456789") == ""
	case int64:
		return v == 0
	}
	return false
}

// probeIfSilent settles the failures that are not an answer from Redis (a timeout,
// a connection cut): when Redis does not answer a PING within the probe timeout
// either, they become unavailable (or what the PING's error says, refused credentials
// say); when it answers, they stay retryable.
func (s *Sink) probeIfSilent(ctx context.Context, errs []error) {
	if !slices.ContainsFunc(errs, silent) || errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ProbeTimeout)
	defer cancel()
	perr := s.rdb.Ping(pctx).Err()
	if perr == nil {
		return
	}
	for i, err := range errs {
		if !silent(err) {
			continue
		}
		err = fmt.Errorf("%w; no answer to PING: %w", err, perr)
		var de *outbox.DestinationError
		if c := classify("", perr); errors.As(c, &de) {
			errs[i] = outbox.DestinationFault(de.Reason, err)
		} else {
			errs[i] = outbox.Unavailable(err)
		}
	}
}

// silent reports whether a classified failure is not an answer from Redis.
func silent(err error) bool {
	var (
		de   *outbox.DestinationError
		rerr redis.Error
	)
	return err != nil && !outbox.IsPermanent(err) && !errors.As(err, &de) && !errors.As(err, &rerr) &&
		!errors.Is(err, redis.ErrClosed)
}

// classify marks err by what it says about the event, its stream or the whole
// destination. Permanent is what the same event cannot get past: its stream's key
// holds another type. A connection that could not be made, or a Redis not serving
// (loading its data, its master or cluster down, a script running too long), is
// unavailable; refused credentials, a missing database, no memory or a read-only
// replica hold every event alike. Every other error (TRYAGAIN, a lost connection, a
// timeout) is retried.
func classify(stream string, err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		if isDialErr(err) {
			return outbox.Unavailable(err)
		}
		return err
	}
	msg := rerr.Error()
	switch {
	case redis.HasErrorPrefix(err, "WRONGTYPE"):
		return outbox.Permanent(err)
	case redis.IsAuthError(err): // NOAUTH, WRONGPASS, unauthenticated
		return outbox.DestinationFault(outbox.ReasonCredentials, err)
	case redis.IsPermissionError(err): // NOPERM: a command, or a key, the user may not use
		if stream != "" && strings.Contains(msg, " key") {
			return outbox.TargetFault(outbox.ReasonCredentials, stream, err)
		}
		return outbox.DestinationFault(outbox.ReasonCredentials, err)
	case redis.IsOOMError(err):
		return outbox.DestinationFault(ReasonOutOfMemory, err)
	case redis.IsReadOnlyError(err):
		return outbox.DestinationFault(ReasonReadOnly, err)
	case redis.IsLoadingError(err), redis.IsMasterDownError(err), redis.IsClusterDownError(err),
		redis.HasErrorPrefix(err, "BUSY"):
		return outbox.Unavailable(err)
	}
	switch lower := strings.ToLower(msg); {
	case !strings.HasPrefix(lower, "err "):
	case strings.Contains(lower, "db index"), strings.Contains(lower, "select is not allowed"):
		return outbox.DestinationFault(ReasonNoDatabase, err)
	case strings.Contains(lower, "invalid password"), strings.Contains(lower, "auth") && strings.Contains(lower, "password"):
		// Redis before 6 ("invalid password"), or a password sent to a Redis that
		// has none ("AUTH <password> called without any password configured").
		return outbox.DestinationFault(outbox.ReasonCredentials, err)
	}
	return err
}

func isDialErr(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(err, &opErr) && opErr.Op == "dial" || errors.As(err, &dnsErr)
}
