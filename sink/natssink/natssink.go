// Package natssink publishes outbox events to NATS JetStream. Each event becomes one
// message: the JSON envelope of package sink as its data, on a subject built from a
// template ("outbox.{type}"), with the event ID in the Nats-Msg-Id header. JetStream
// drops a message whose ID it has seen within the stream's duplicate window, so an
// event delivered twice (its acknowledgement was lost, the relay crashed before
// recording it) is stored once. The event's trace metadata (traceparent, tracestate,
// baggage) goes as message headers of those names, in lower case.
//
// A publish that fails because NATS cannot be reached (disconnected, no stream
// answering) is marked outbox.Unavailable: the processor then pauses deliveries
// instead of spending the events' attempts.
//
// A batch is published without waiting in between and its acknowledgements are then
// awaited together, so a batch of 1000 costs about one round trip, not 1000. An event
// counts as delivered only once the stream has acknowledged it (stored, or recognised
// as a duplicate).
package natssink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// The defaults of Config.
const (
	DefaultSubject    = "outbox.{type}"
	DefaultAckTimeout = 10 * time.Second
	DefaultMaxPending = 4000
)

// Config tunes a Sink.
type Config struct {
	// Subject is the subject template: {type}, {entity_id} and {user_id} are replaced by
	// the event's values, with characters that cannot appear in a subject token ('.',
	// '*', '>', white space) turned into '_'. A stream must capture the subjects it
	// produces. Defaults to "outbox.{type}".
	Subject string
	// Stream, when set, is the stream the messages must land in: a publish that another
	// stream (or none) captures fails instead of landing elsewhere.
	Stream string
	// AckTimeout bounds the wait for the stream's acknowledgements of one batch. A
	// message not acknowledged in time fails its event, to be retried (and deduplicated
	// if it did land). Defaults to 10s.
	AckTimeout time.Duration
	// MaxPending caps the publishes awaiting acknowledgement at once; a larger batch
	// waits for room. Defaults to 4000.
	MaxPending int
}

// Sink is an outbox.BatchHandler that publishes to JetStream. It is safe for
// concurrent use.
type Sink struct {
	nc      *nats.Conn
	cfg     Config
	subject sink.Template
	js      jetstream.JetStream
	opts    []jetstream.PublishOpt
}

var _ outbox.BatchHandler = (*Sink)(nil)

// New returns a Sink publishing over nc, which the caller owns (connects, configures
// reconnection, closes). It fails when cfg holds a value that cannot work.
func New(nc *nats.Conn, cfg Config) (*Sink, error) {
	if nc == nil {
		return nil, &outbox.FieldError{Field: "natssink.New", Problem: "connection must not be nil"}
	}
	cfg = cfg.withDefaults()
	tmpl, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc,
		// Unacknowledged publishes are forgotten after the timeout instead of piling up.
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
	)
	if err != nil {
		return nil, fmt.Errorf("natssink: %w", err)
	}
	s := &Sink{nc: nc, cfg: cfg, subject: tmpl, js: js}
	// Wait for room among the pending acks for as long as an ack may take.
	s.opts = append(s.opts, jetstream.WithStallWait(cfg.AckTimeout))
	if cfg.Stream != "" {
		s.opts = append(s.opts, jetstream.WithExpectStream(cfg.Stream))
	}
	return s, nil
}

func (c Config) withDefaults() Config {
	c.Subject = cmp.Or(c.Subject, DefaultSubject)
	c.AckTimeout = cmp.Or(c.AckTimeout, DefaultAckTimeout)
	c.MaxPending = cmp.Or(c.MaxPending, DefaultMaxPending)
	return c
}

// Validate reports the first field of c that cannot work, naming it, without a
// connection: the relay checks its flags with it before it dials anything.
func (c Config) Validate() error {
	_, err := c.withDefaults().validate()
	return err
}

func (c Config) validate() (sink.Template, error) {
	tmpl, err := sink.ParseTemplate(c.Subject)
	if err != nil {
		return tmpl, &outbox.FieldError{Field: "natssink.Config.Subject", Problem: err.Error()}
	}
	if err := CheckSubject(tmpl.Sample("x")); err != nil {
		return tmpl, &outbox.FieldError{Field: "natssink.Config.Subject", Problem: fmt.Sprintf("template %q: %v", c.Subject, err)}
	}
	if c.AckTimeout < 0 {
		return tmpl, &outbox.FieldError{Field: "natssink.Config.AckTimeout", Problem: fmt.Sprintf("must not be negative, got %s", c.AckTimeout)}
	}
	if c.MaxPending < 0 {
		return tmpl, &outbox.FieldError{Field: "natssink.Config.MaxPending", Problem: fmt.Sprintf("must not be negative, got %d", c.MaxPending)}
	}
	if strings.ContainsFunc(c.Stream, func(r rune) bool { return r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) }) {
		return tmpl, &outbox.FieldError{Field: "natssink.Config.Stream", Problem: fmt.Sprintf("%q is not a stream name", c.Stream)}
	}
	return tmpl, nil
}

// CheckSubject reports why s cannot be published to, if it cannot: an empty token,
// white space, or a wildcard.
func CheckSubject(s string) error {
	for tok := range strings.SplitSeq(s, ".") {
		switch {
		case tok == "":
			return fmt.Errorf("subject %q has an empty token", s)
		case tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("subject %q contains a wildcard", s)
		case strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			return fmt.Errorf("subject %q contains white space", s)
		}
	}
	return nil
}

// token makes v usable as one subject token.
func token(v string) string {
	if v == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, v)
}

// Subject returns the subject e is published to.
func (s *Sink) Subject(e outbox.Event) string { return s.subject.Expand(e, token) }

// Handle publishes one event and waits for its acknowledgement.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch publishes every event of the batch, then awaits the acknowledgements
// together; errs[i] is nil when the stream has stored events[i] (or already had it).
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	futures := make([]jetstream.PubAckFuture, len(events))
	for i, e := range events {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		data, err := sink.Encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		msg := &nats.Msg{Subject: s.Subject(e), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, e.ID)
		msg.Header.Set("Content-Type", sink.ContentType)
		msg.Header.Set("Outbox-Type", e.Type)
		for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
			if v := e.Metadata[k]; v != "" {
				msg.Header.Set(k, v)
			}
		}
		futures[i], err = s.js.PublishMsgAsync(msg, s.opts...)
		if err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				err = outbox.Permanent(err) // the same message will never fit
			}
			errs[i] = fmt.Errorf("publish to %s: %w", msg.Subject, err)
		}
	}

	actx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			// Stored, or a duplicate the stream already holds: delivered either way.
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
		case <-actx.Done():
			err := actx.Err()
			if ctx.Err() == nil {
				err = fmt.Errorf("no acknowledgement within %s", s.cfg.AckTimeout)
			}
			errs[i] = fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
		}
	}
	for i, err := range errs {
		if err != nil && s.unreachable(err) {
			errs[i] = outbox.Unavailable(err)
		}
	}
	return errs
}

// unreachable tells a failure to reach NATS (no connection, no stream answering) from
// a failure of the message, so that the processor pauses instead of spending attempts.
func (s *Sink) unreachable(err error) bool {
	if outbox.IsPermanent(err) || errors.Is(err, context.Canceled) {
		return false
	}
	switch {
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return true
	}
	// An acknowledgement that did not come while the connection was down.
	return !s.nc.IsConnected()
}
