// Package natssink publishes outbox events to NATS JetStream. Each event becomes one
// message: the JSON envelope of package sink as its data, on a subject built from a
// template ("outbox.{type}"), with the event ID in the Nats-Msg-Id header. JetStream
// drops a message whose ID it has seen within the stream's duplicate window, so an
// event delivered twice (its acknowledgement was lost, the relay crashed before
// recording it) is stored once. The event's trace metadata (traceparent, tracestate,
// baggage) goes as message headers of those names, in lower case.
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	acknowledged by the stream (stored, or a duplicate)  delivered
//	connection not up (refused, down, closed)            outbox.Unavailable: delivery held, no attempt spent
//	credentials rejected (authorization violation,
//	  authentication expired or revoked)                 held: outbox.ReasonCredentials
//	no stream captures the subject (no responders),
//	  or not the one Config.Stream names                 held, for that subject only: outbox.ReasonTargetMissing
//	publishing to the subject not permitted              held, for that subject only: outbox.ReasonCredentials
//	larger than the server's max_payload or the
//	  stream's max_msg_size                              permanent: given up
//	no acknowledgement within AckTimeout, the stream
//	  full, other stream errors                          retried
//
// A batch is published without waiting in between and its acknowledgements are then
// awaited together, so a batch of 1000 costs about one round trip, not 1000. An event
// counts as delivered only once the stream has acknowledged it (stored, or recognised
// as a duplicate).
//
// With Config.Envelope set to a CloudEvents format, messages follow the CloudEvents
// NATS binding: the structured mode's data is the event's CloudEvents JSON document,
// with the header Content-Type: application/cloudevents+json; the binary mode's data
// is the payload, with each context attribute as a ce- header (ce-id, ce-source,
// ce-type, ce-subject, ce-time, ce-datacontenttype, ce-outboxattempt, …), its value
// percent-encoded. Nats-Msg-Id, Outbox-Type and the trace headers are set either way.
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
	// Envelope is what a message carries: sink.EnvelopeOutbox (the default: the JSON
	// envelope of package sink), sink.EnvelopeCloudEventsStructured (the CloudEvents
	// JSON document, header Content-Type: application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as data, each context attribute as a
	// ce- header, percent-encoded, as the CloudEvents NATS binding says).
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

// Sink is an outbox.BatchHandler that publishes to JetStream. It is safe for
// concurrent use.
type Sink struct {
	nc      *nats.Conn
	cfg     Config
	subject sink.Template
	js      jetstream.JetStream
	opts    []jetstream.PublishOpt
	enc     sink.Encoder
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
	s := &Sink{nc: nc, cfg: cfg, subject: tmpl, js: js, enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}
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
	if err := sink.CheckEnvelope("natssink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return tmpl, err
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
// An error's text is fit for a store whatever the server answered (outbox.CleanError).
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := s.handleBatch(ctx, events)
	for i, err := range errs {
		errs[i] = outbox.CleanError(err) // a server's answer may hold anything
	}
	return errs
}

func (s *Sink) handleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	if err := s.connError(); err != nil {
		// Nothing can go out: a publish now would wait in the client's reconnect
		// buffer, its acknowledgement failed when the connection comes back.
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	futures := make([]jetstream.PubAckFuture, len(events))
	for i, e := range events {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		enc, err := s.enc.Encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		msg := &nats.Msg{Subject: s.Subject(e), Data: enc.Body, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, e.ID)
		if enc.ContentType != "" {
			msg.Header.Set("Content-Type", enc.ContentType)
		}
		msg.Header.Set("Outbox-Type", e.Type)
		if enc.Binary {
			// The CloudEvents NATS binding: every attribute a ce- header,
			// datacontenttype too.
			for _, a := range enc.Attributes {
				msg.Header.Set("ce-"+a.Name, sink.PercentEncode(a.Value))
			}
			if enc.ContentType != "" {
				msg.Header.Set("ce-datacontenttype", enc.ContentType)
			}
		}
		for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
			if v := e.Metadata[k]; v != "" {
				msg.Header.Set(k, v)
			}
		}
		futures[i], err = s.js.PublishMsgAsync(msg, s.opts...)
		if err != nil {
			futures[i] = nil
			errs[i] = s.classify(msg.Subject, err)
		}
	}

	actx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		var err error
		select {
		case <-f.Ok():
			// Stored, or a duplicate the stream already holds: delivered either way.
		case err = <-f.Err():
		case <-actx.Done():
			// Past the deadline, an answer that came in time still counts (a select
			// with several cases ready picks one at random).
			select {
			case <-f.Ok():
			case err = <-f.Err():
			default:
				err = actx.Err()
				if ctx.Err() == nil {
					err = fmt.Errorf("%w: no acknowledgement within %s", errNoAck, s.cfg.AckTimeout)
				}
			}
		}
		if err != nil {
			errs[i] = s.classify(f.Msg().Subject, err)
		}
	}
	return errs
}

// errNoAck is the error of a publish whose acknowledgement did not come in time.
var errNoAck = errors.New("not acknowledged")

// errCodeStreamNotMatch is JetStream's "expected stream does not match": the subject
// is captured by a stream other than Config.Stream.
const errCodeStreamNotMatch jetstream.ErrorCode = 10060

// connError returns why nothing can be published now, or nil when the connection is
// up: credentials rejected, or NATS unreachable.
func (s *Sink) connError() error {
	status := s.nc.Status()
	if status == nats.CONNECTED || status == nats.DRAINING_SUBS {
		return nil
	}
	last := s.nc.LastError()
	if isAuthError(last) {
		// nats.go closes the connection once a server refused the same credentials
		// twice; it stays so until the caller connects again.
		return outbox.DestinationFault(outbox.ReasonCredentials,
			fmt.Errorf("NATS refused the credentials (connection %s): %w", strings.ToLower(status.String()), last))
	}
	err := fmt.Errorf("cannot reach NATS (connection %s)", strings.ToLower(status.String()))
	if last != nil {
		err = fmt.Errorf("%w: %w", err, last)
	}
	return outbox.Unavailable(err)
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// classify marks err, the failure of a publish to subject, with whose fault it is:
// the connection's (unavailable), the stream's for this subject (a target fault), the
// message's (permanent), or none that is known (retryable).
func (s *Sink) classify(subject string, err error) error {
	wrapped := fmt.Errorf("publish to %s: %w", subject, err)
	var apiErr *jetstream.APIError
	switch {
	case outbox.IsPermanent(err):
		return wrapped
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		if cerr := s.connError(); cerr != nil {
			// The connection dropped while the sink waited: a publish made just after
			// the drop waits unanswered in the client's reconnect buffer. An outage, as
			// when the wait ends by AckTimeout.
			return fmt.Errorf("%w (publish to %s: %w)", cerr, subject, err)
		}
		// The caller's deadline (the handler timeout), not NATS's: retried.
		return wrapped
	case errors.Is(err, nats.ErrMaxPayload):
		return outbox.Permanent(wrapped) // the same message will never fit
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return outbox.Permanent(wrapped) // larger than the stream's max_msg_size
		case errCodeStreamNotMatch:
			return outbox.TargetFault(outbox.ReasonTargetMissing, subject,
				fmt.Errorf("publish to %s: stream %s does not capture the subject: %w", subject, s.cfg.Stream, err))
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return outbox.DestinationFault("JetStream not enabled", wrapped)
		}
		return wrapped // stream full, sealed, storage failed: it may take the message later
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		if cerr := s.connError(); cerr != nil {
			return cerr
		}
		return outbox.TargetFault(outbox.ReasonTargetMissing, subject,
			fmt.Errorf("publish to %s: no stream captures the subject: %w", subject, err))
	case errors.Is(err, nats.ErrHeadersNotSupported):
		if cerr := s.connError(); cerr != nil {
			return cerr // the client has not heard from any server yet
		}
		return outbox.DestinationFault("NATS server does not support headers (2.2 or later needed)", wrapped)
	}
	if cerr := s.connError(); cerr != nil {
		// Disconnected, closed, an acknowledgement lost with the connection: the
		// message may have landed, and is deduplicated when published again.
		return fmt.Errorf("%w (publish to %s: %w)", cerr, subject, err)
	}
	if errors.Is(err, errNoAck) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		// A publish the server refused for this account's permissions is dropped
		// without an answer; the client only keeps the refusal as its last error.
		if last := s.nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) &&
			strings.Contains(strings.ToLower(last.Error()), strings.ToLower(`publish to "`+subject+`"`)) {
			return outbox.TargetFault(outbox.ReasonCredentials, subject, fmt.Errorf("%w (%w)", wrapped, last))
		}
	}
	return wrapped
}
