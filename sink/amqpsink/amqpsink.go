// Package amqpsink publishes outbox events to RabbitMQ (AMQP 0-9-1). Each event becomes
// one persistent message: the JSON envelope of package sink as its body, the event ID as
// its message-id (the receiver's deduplication key), published to an exchange with a
// routing key built from a template ("outbox.{type}"). The event's trace metadata
// (traceparent, tracestate, baggage) goes as string headers of those names.
//
// An event counts as delivered only when the broker has confirmed the message
// (publisher confirms) and has not returned it as unroutable: messages are published
// mandatory, so a routing key that no queue is bound to fails the event instead of
// dropping the message. A batch is published without waiting in between and its
// confirms are awaited together. Delivery is at least once: a confirm lost with the
// connection makes the event go again, so receivers deduplicate on message-id.
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	confirmed, not returned                          delivered
//	broker unreachable (refused, down, dial or
//	  handshake timed out)                           outbox.Unavailable: delivery held, no attempt spent
//	connection lost before the confirm (broker
//	  restarted, network cut)                        outbox.Unavailable; published again later
//	credentials refused (ACCESS_REFUSED), at
//	  connect or publish                             held: outbox.ReasonCredentials
//	virtual host refused (NOT_ALLOWED)               held: "connection not allowed"
//	exchange missing (NOT_FOUND)                     held, target the exchange: outbox.ReasonTargetMissing
//	returned (NO_ROUTE: no queue bound to the key)   held, target "exchange/routing key": outbox.ReasonTargetMissing
//	larger than the broker's max_message_size
//	  (PRECONDITION_FAILED)                          permanent: given up
//	nacked, no confirm within ConfirmTimeout         retried
//
// The sink owns its connection. It connects on first use and, when the connection
// drops, fails the batch in flight and connects again on the next one. A channel the
// broker closed over a publish (a missing exchange, a message too large) is replaced
// by a new one on the same connection. When a message too large closed it, the other
// events of the batch that the broker had not confirmed are published again at once,
// on the new channel, so that one event's fault does not fail its batch.
//
// With Config.Envelope set to a CloudEvents format, messages follow the CloudEvents
// AMQP binding (its application properties are 0-9-1's headers): the structured
// mode's body is the event's CloudEvents JSON document, content-type
// application/cloudevents+json; the binary mode's body is the payload, content-type
// application/json (the datacontenttype attribute), with each other context
// attribute as a header named cloudEvents_ and the attribute (cloudEvents_id,
// cloudEvents_source, cloudEvents_type, cloudEvents_subject, cloudEvents_time,
// cloudEvents_outboxattempt, …). message-id, type, timestamp and the outbox- and
// trace headers are set either way.
package amqpsink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// The defaults of Config.
const (
	DefaultExchange       = "amq.topic"
	DefaultRoutingKey     = "outbox.{type}"
	DefaultConfirmTimeout = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
)

// Config tunes a Sink.
type Config struct {
	// URL is the broker, amqp:// or amqps:// (TLS, verified). Required.
	URL string
	// Exchange receives the messages. It must exist. Defaults to "amq.topic", the topic
	// exchange every RabbitMQ virtual host has.
	Exchange string
	// RoutingKey is the routing-key template: {type}, {entity_id} and {user_id} are
	// replaced by the event's values. Defaults to "outbox.{type}".
	RoutingKey string
	// ConfirmTimeout bounds the wait for the broker's confirms of one batch. Defaults to 10s.
	ConfirmTimeout time.Duration
	// DialTimeout bounds connecting to the broker. Defaults to 10s.
	DialTimeout time.Duration
	// Logger receives connection events. Defaults to slog.Default().
	Logger *slog.Logger
	// Envelope is what a message carries: sink.EnvelopeOutbox (the default: the JSON
	// envelope of package sink), sink.EnvelopeCloudEventsStructured (the CloudEvents
	// JSON document, content-type application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as the body, content-type
	// application/json, each other context attribute as a cloudEvents_ header, as
	// the CloudEvents AMQP binding maps them to application properties).
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

// chunk is the most messages awaiting confirms at once; it sizes the buffer that
// catches returned messages, so that the client's reader never waits on us.
const chunk = 1000

// Sink is an outbox.BatchHandler that publishes to RabbitMQ. It is safe for concurrent
// use; batches go out one at a time over one channel.
type Sink struct {
	cfg        Config
	routingKey sink.Template
	log        *slog.Logger
	enc        sink.Encoder

	mu       sync.Mutex
	conn     *amqp.Connection
	ch       *amqp.Channel
	returns  chan amqp.Return
	chClosed chan *amqp.Error // why ch closed, when the broker closed it
	closed   bool
}

var _ outbox.BatchHandler = (*Sink)(nil)

// New returns a Sink, or an error naming the Config field that cannot work. It does
// not connect: the first delivery does.
func New(cfg Config) (*Sink, error) {
	cfg = cfg.withDefaults()
	tmpl, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: cfg, routingKey: tmpl, log: cfg.Logger.With("component", "outbox.amqpsink"),
		enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}, nil
}

func (c Config) withDefaults() Config {
	c.Exchange = cmp.Or(c.Exchange, DefaultExchange)
	c.RoutingKey = cmp.Or(c.RoutingKey, DefaultRoutingKey)
	c.ConfirmTimeout = cmp.Or(c.ConfirmTimeout, DefaultConfirmTimeout)
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first field of c that cannot work, naming it. It does not
// connect.
func (c Config) Validate() error {
	_, err := c.withDefaults().validate()
	return err
}

func (c Config) validate() (sink.Template, error) {
	var tmpl sink.Template
	if c.URL == "" {
		return tmpl, fieldError("URL", "must not be empty")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		return tmpl, fieldError("URL", fmt.Sprintf("%s: %v", redact(c.URL), err))
	}
	tmpl, err := sink.ParseTemplate(c.RoutingKey)
	if err != nil {
		return tmpl, fieldError("RoutingKey", err.Error())
	}
	if len(c.Exchange) > 255 {
		return tmpl, fieldError("Exchange", "is longer than 255 bytes")
	}
	if c.ConfirmTimeout < 0 {
		return tmpl, fieldError("ConfirmTimeout", fmt.Sprintf("must not be negative, got %s", c.ConfirmTimeout))
	}
	if c.DialTimeout < 0 {
		return tmpl, fieldError("DialTimeout", fmt.Sprintf("must not be negative, got %s", c.DialTimeout))
	}
	if err := sink.CheckEnvelope("amqpsink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return tmpl, err
	}
	return tmpl, nil
}

func fieldError(field, problem string) error {
	return &outbox.FieldError{Field: "amqpsink.Config." + field, Problem: problem}
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "the URL"
}

// RoutingKey returns the routing key e is published with. Routing keys are limited to
// 255 bytes; a longer one is cut.
func (s *Sink) RoutingKey(e outbox.Event) string {
	k := s.routingKey.Expand(e, func(v string) string { return v })
	if len(k) > 255 {
		k = k[:255]
	}
	return k
}

// Close closes the connection. Deliveries after Close fail.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.disconnect()
}

func (s *Sink) disconnect() error {
	var err error
	if s.conn != nil {
		// A broker that stopped answering must not hold the sink: give the close
		// handshake a second, then drop the socket.
		err = s.conn.CloseDeadline(time.Now().Add(time.Second))
		if errors.Is(err, amqp.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil
		}
	}
	s.conn, s.ch, s.returns, s.chClosed = nil, nil, nil, nil
	return err
}

// connect makes sure a channel in confirm mode is open: a new channel when only the
// channel was closed, a new connection when the connection dropped. Its error is
// marked as the destination's fault (see dialError).
func (s *Sink) connect() error {
	if s.closed {
		return errors.New("amqpsink: closed")
	}
	if s.ch != nil && !s.ch.IsClosed() && !s.conn.IsClosed() {
		return nil
	}
	if s.conn != nil && !s.conn.IsClosed() {
		// The broker closed the channel over one publish (a missing exchange, a
		// message too large): the connection serves on.
		if err := s.openChannel(); err == nil {
			return nil
		}
	}
	reconnect := s.conn != nil
	_ = s.disconnect()
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("outbox-amqpsink")
	conn, err := amqp.DialConfig(s.cfg.URL, amqp.Config{
		Dial:       amqp.DefaultDial(s.cfg.DialTimeout),
		Properties: props,
		Heartbeat:  10 * time.Second,
	})
	if err != nil {
		return dialError(fmt.Errorf("connect to %s: %w", redact(s.cfg.URL), err))
	}
	s.conn = conn
	if err := s.openChannel(); err != nil {
		_ = s.disconnect()
		return outbox.Unavailable(fmt.Errorf("open confirm channel: %w", err))
	}
	if reconnect {
		s.log.Info("reconnected to the broker")
	}
	return nil
}

// openChannel opens a channel in confirm mode on s.conn, with its listeners.
func (s *Sink) openChannel() error {
	ch, err := s.conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		if ch != nil {
			_ = ch.Close()
		}
		return err
	}
	s.ch = ch
	s.returns = ch.NotifyReturn(make(chan amqp.Return, chunk))
	s.chClosed = ch.NotifyClose(make(chan *amqp.Error, 1))
	return nil
}

// dialError marks err, a failure to connect, as the destination's: its credentials
// refused, its virtual host refused, or (whatever else: refused, unresolved, timed
// out, not AMQP) unreachable.
func dialError(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused: // a wrong user or password (ErrCredentials, or the broker's own reply)
			return outbox.DestinationFault(outbox.ReasonCredentials, err)
		case amqp.NotAllowed: // no such virtual host, no access to it, a connection limit
			return outbox.DestinationFault(reasonNotAllowed, err)
		}
	}
	return outbox.Unavailable(err)
}

// reasonNotAllowed is the DestinationError.Reason of a connection the broker refused
// after authentication (RabbitMQ's NOT_ALLOWED: the virtual host).
const reasonNotAllowed = "connection not allowed"

// Handle publishes one event and waits for its confirm.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch publishes the batch and awaits the broker's confirms together; errs[i]
// is nil when the broker confirmed events[i] and did not return it.
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(events))
	for start := 0; start < len(events); start += chunk {
		end := min(start+chunk, len(events))
		s.publish(ctx, events[start:end], errs[start:end])
	}
	return errs
}

func (s *Sink) publish(ctx context.Context, events []outbox.Event, errs []error) {
	s.publishOnce(ctx, events, errs, true)
}

// publishOnce publishes events on the current channel and sets errs. When the broker
// closed the channel over one message (too large), the others it had not confirmed
// are published once more on a new channel, if again.
func (s *Sink) publishOnce(ctx context.Context, events []outbox.Event, errs []error, again bool) {
	if err := s.connect(); err != nil {
		// The broker cannot be reached, or refuses the sink: not the events' fault.
		for i := range events {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return
	}
	// Returns left over from an earlier batch are not about this one.
	for len(s.returns) > 0 {
		<-s.returns
	}
	ch, chClosed := s.ch, s.chClosed
	bodies := make([][]byte, len(events))
	confirms := make([]*amqp.DeferredConfirmation, len(events))
	var pubErr error // the channel or connection is gone: the events from here on did not go out
	for i, e := range events {
		if errs[i] != nil {
			continue
		}
		enc, err := s.enc.Encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		bodies[i] = enc.Body
		if pubErr != nil {
			continue
		}
		headers := amqp.Table{
			"outbox-entity-id": e.EntityID,
			"outbox-user-id":   e.UserID,
			"outbox-attempt":   int32(e.Attempts),
		}
		for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
			if v := e.Metadata[k]; v != "" {
				headers[k] = v
			}
		}
		for _, a := range enc.Attributes { // binary mode: the CloudEvents AMQP binding's application properties
			headers[CloudEventsPrefix+a.Name] = amqpValue(a)
		}
		// Mandatory: a message no queue is bound for comes back (basic.return) instead
		// of being dropped.
		confirms[i], pubErr = ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.Exchange, s.RoutingKey(e), true, false, amqp.Publishing{
			ContentType:  enc.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    e.ID,
			Timestamp:    e.CreatedAt,
			Type:         e.Type,
			AppId:        "outbox",
			Headers:      headers,
			Body:         enc.Body,
		})
		if pubErr != nil {
			confirms[i] = nil
		}
	}

	wctx, cancel := context.WithTimeout(ctx, s.cfg.ConfirmTimeout)
	defer cancel()
	unsure := false
	acked := make([]bool, len(events))
	for i, c := range confirms {
		if c == nil {
			continue
		}
		ack, err := c.WaitContext(wctx)
		if err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("no confirm within %s", s.cfg.ConfirmTimeout)
			}
			errs[i] = fmt.Errorf("publish: %w", err)
			unsure = true
			continue
		}
		acked[i] = ack
	}
	// The broker sends basic.return before the confirm of the same message, and the
	// client has put it in our buffer before it reported the confirm.
	returned := make(map[string]amqp.Return)
	for len(s.returns) > 0 {
		r := <-s.returns
		returned[r.MessageId] = r
	}

	// Why the channel closed, if it did: the client reports it before it resolves the
	// pending confirms as not acknowledged, but may refuse a publish a moment before.
	var closeErr *amqp.Error
	if pubErr != nil || ch.IsClosed() {
		select {
		case closeErr = <-chClosed:
		case <-time.After(time.Second):
		}
	}
	var maxSize int64 // the broker's max_message_size, when a message broke it
	if closeErr != nil && closeErr.Code == amqp.PreconditionFailed {
		maxSize = tooLarge(closeErr.Reason)
	}
	// The connection itself is gone (the broker stopped, the network failed), not
	// just the channel.
	connLost := s.conn.IsClosed()

	var retry []int // innocent events of a channel closed over another's message
	for i, e := range events {
		if errs[i] != nil {
			continue
		}
		if r, ok := returned[e.ID]; ok {
			// Not routed to any queue: whatever the confirm said, it is nowhere.
			target := s.cfg.Exchange + "/" + r.RoutingKey
			errs[i] = outbox.TargetFault(outbox.ReasonTargetMissing, target, fmt.Errorf(
				"returned by the broker: %d %s (exchange %q, routing key %q: no queue bound?)",
				r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey))
			continue
		}
		if acked[i] {
			continue
		}
		switch {
		case confirms[i] != nil && !ch.IsClosed():
			errs[i] = errors.New("publish: nacked by the broker")
		case closeErr != nil:
			errs[i] = s.closedError(closeErr, len(bodies[i]), maxSize, connLost)
			if maxSize > 0 && int64(len(bodies[i])) <= maxSize && again {
				errs[i] = nil
				retry = append(retry, i)
			}
		case connLost:
			errs[i] = outbox.Unavailable(fmt.Errorf("publish: connection to the broker lost before the confirm: %w", cmp.Or(pubErr, error(amqp.ErrClosed))))
		case pubErr != nil:
			errs[i] = fmt.Errorf("publish: %w", pubErr)
		default:
			errs[i] = errors.New("publish: not confirmed by the broker (channel closed)")
		}
	}
	if unsure {
		// Confirms may still arrive for this batch; start the next one on a fresh
		// connection rather than match them up.
		_ = s.disconnect()
	}
	if len(retry) > 0 {
		sub := make([]outbox.Event, len(retry))
		subErrs := make([]error, len(retry))
		for j, i := range retry {
			sub[j] = events[i]
		}
		s.publishOnce(ctx, sub, subErrs, false)
		for j, i := range retry {
			errs[i] = subErrs[j]
		}
	}
}

// CloudEventsPrefix is the prefix of the headers that carry a binary-mode
// CloudEvent's attributes: the AMQP binding's "cloudEvents_" (the separator it
// prefers, which JMS selectors can name too).
const CloudEventsPrefix = "cloudEvents_"

// amqpValue is a CloudEvents attribute's value as the AMQP binding maps it: Boolean
// and Integer as the native types (boolean, and a long: int64), the rest as the
// canonical string (time too: a 0-9-1 timestamp holds whole seconds only).
func amqpValue(a sink.Attribute) any {
	switch a.Kind {
	case sink.KindBoolean:
		return a.Value == "true"
	case sink.KindInteger:
		return a.Int()
	}
	return a.Value
}

// closedError is the error of an event that the broker did not confirm because it
// closed the channel (or the connection: connLost) with closeErr; size is the event's
// message body size, maxSize the broker's limit when closeErr says a message broke it.
func (s *Sink) closedError(closeErr *amqp.Error, size int, maxSize int64, connLost bool) error {
	err := fmt.Errorf("publish: %w", closeErr)
	switch closeErr.Code {
	case amqp.NotFound:
		return outbox.TargetFault(outbox.ReasonTargetMissing, s.cfg.Exchange, err)
	case amqp.AccessRefused:
		return outbox.DestinationFault(outbox.ReasonCredentials, err)
	case amqp.PreconditionFailed:
		if maxSize > 0 && int64(size) > maxSize {
			return outbox.Permanent(fmt.Errorf("message of %d bytes is larger than the broker takes (%d): %w", size, maxSize, err))
		}
		if maxSize > 0 {
			return fmt.Errorf("publish: the broker closed the channel over another message of the batch: %w", closeErr)
		}
	}
	if connLost {
		// The broker stopped, or the network failed: an outage, not the event's
		// fault. The message may or may not have reached the broker; it goes again
		// (consumers deduplicate on message-id).
		return outbox.Unavailable(fmt.Errorf("publish: connection to the broker lost before the confirm: %w", closeErr))
	}
	// Something else closed the channel: the message may or may not have reached the
	// broker.
	return err
}

var maxSizeRe = regexp.MustCompile(`message size \d+ is larger than configured max size (\d+)`)

// tooLarge returns the broker's max_message_size from the text of RabbitMQ's
// PRECONDITION_FAILED over a message larger than that, or 0.
func tooLarge(reason string) int64 {
	m := maxSizeRe.FindStringSubmatch(reason)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
