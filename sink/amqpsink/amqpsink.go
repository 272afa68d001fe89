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
// The sink owns its connection. It connects on first use and, when the connection or
// channel drops, fails the batch in flight and connects again on the next one.
package amqpsink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
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

	mu      sync.Mutex
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closed  bool
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
	return &Sink{cfg: cfg, routingKey: tmpl, log: cfg.Logger.With("component", "outbox.amqpsink")}, nil
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
	s.conn, s.ch, s.returns = nil, nil, nil
	return err
}

// connect makes sure a channel in confirm mode is open, dialing again when the
// connection or the channel has dropped.
func (s *Sink) connect() error {
	if s.closed {
		return errors.New("amqpsink: closed")
	}
	if s.ch != nil && !s.ch.IsClosed() && !s.conn.IsClosed() {
		return nil
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
		return fmt.Errorf("connect to %s: %w", redact(s.cfg.URL), err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("open confirm channel: %w", err)
	}
	s.conn, s.ch = conn, ch
	s.returns = ch.NotifyReturn(make(chan amqp.Return, chunk))
	if reconnect {
		s.log.Info("reconnected to the broker")
	}
	return nil
}

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
	fail := func(from int, err error) {
		for i := from; i < len(events); i++ {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	if err := s.connect(); err != nil {
		// The broker cannot be reached: not the events' fault.
		fail(0, outbox.Unavailable(err))
		return
	}
	// Returns left over from an earlier batch are not about this one.
	for len(s.returns) > 0 {
		<-s.returns
	}
	confirms := make([]*amqp.DeferredConfirmation, len(events))
	for i, e := range events {
		body, err := sink.Encode(e)
		if err != nil {
			errs[i] = err
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
		confirms[i], err = s.ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.Exchange, s.RoutingKey(e), true, false, amqp.Publishing{
			ContentType:  sink.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    e.ID,
			Timestamp:    e.CreatedAt,
			Type:         e.Type,
			AppId:        "outbox",
			Headers:      headers,
			Body:         body,
		})
		if err != nil {
			// The channel or connection is gone: the rest of the batch cannot go out on
			// it, and the ones published before it on this channel will never be
			// confirmed. They may or may not have reached the broker: fail them all, so
			// that they are published again (at least once), never counted as delivered.
			fail(0, fmt.Errorf("publish: %w", err))
			_ = s.disconnect()
			return
		}
	}

	wctx, cancel := context.WithTimeout(ctx, s.cfg.ConfirmTimeout)
	defer cancel()
	unsure := false
	for i, c := range confirms {
		if c == nil {
			continue
		}
		ack, err := c.WaitContext(wctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				err = fmt.Errorf("no confirm within %s", s.cfg.ConfirmTimeout)
			}
			errs[i] = fmt.Errorf("publish: %w", err)
			unsure = true
		case !ack:
			// A nack, or the channel closed before the confirm came (connection lost,
			// exchange missing): either way the broker has not taken responsibility.
			errs[i] = errors.New("publish: not confirmed by the broker (nack or channel closed)")
			unsure = true
		}
	}
	// The broker sends basic.return before the confirm of the same message, and the
	// client has put it in our buffer before it reported the confirm.
	byID := make(map[string]int, len(events))
	for i, e := range events {
		byID[e.ID] = i
	}
	for len(s.returns) > 0 {
		r := <-s.returns
		if i, ok := byID[r.MessageId]; ok && errs[i] == nil {
			errs[i] = fmt.Errorf("returned by the broker: %d %s (exchange %q, routing key %q: no queue bound?)",
				r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
		}
	}
	if unsure {
		// Confirms may still arrive for this batch; start the next one on a fresh
		// channel rather than match them up.
		_ = s.disconnect()
	}
}
