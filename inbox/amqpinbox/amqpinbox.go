// Package amqpinbox consumes RabbitMQ (AMQP 0-9-1) deliveries through an inbox: each
// message's effect is applied once per message-id (the property amqpsink sets to the
// event ID), in the receiver's database transaction, and the delivery is acknowledged
// only after that transaction has committed. Consume with manual acknowledgements
// (autoAck false).
//
// What becomes of a delivery:
//
//	applied, or a duplicate                 Ack (after the commit)
//	effect failed, database failed          held for the requeue delay, then Nack, requeued: delivered again, applied then
//	effect failed with outbox.Permanent     Reject, not requeued (dead-lettered if the queue has a dead-letter exchange)
//	no message-id, older than the window    Reject, not requeued
//
// RabbitMQ hands a requeued message out again at once, so a failed delivery is held
// (unacknowledged, so no other consumer takes it) before it is requeued: for
// Config.RequeueDelay after a Consumer's first failure in a row, twice as long after
// each further one, up to Config.MaxRequeueDelay, and a success starts over. Without
// the wait, a failing effect spins, the same message delivered and failed again as
// fast as the broker and the database answer. A consumer that dies between the commit and the Ack gets the message again when the
// broker notices the closed connection; the inbox recognises it and it is
// acknowledged then.
package amqpinbox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
)

// ErrNoID: the delivery has no message-id, so a redelivery could not be recognised;
// it is rejected, not applied.
var ErrNoID = errors.New("amqpinbox: delivery has no message-id")

// Func applies one delivery's effect in tx. Return an error marked with
// outbox.Permanent to have the delivery rejected instead of requeued.
type Func func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error

// Defaults of Config.
const (
	// DefaultRequeueDelay holds a failed delivery before its requeue, after the first
	// failure in a row: as long as natsinbox waits before a redelivery.
	DefaultRequeueDelay = time.Second
	// DefaultMaxRequeueDelay caps the doubling delay: a database down for minutes
	// costs a delivery every half minute per consumer, and a recovery is noticed
	// within that.
	DefaultMaxRequeueDelay = 30 * time.Second
)

// Config tunes a Consumer.
type Config struct {
	// RequeueDelay is how long a delivery whose effect failed is held before it is
	// requeued, after the Consumer's first failure in a row; each further consecutive
	// failure doubles it, up to MaxRequeueDelay, and a success starts over. The wait
	// ends early when Handle's context ends (the delivery is then requeued at once).
	// Defaults to DefaultRequeueDelay.
	RequeueDelay time.Duration
	// MaxRequeueDelay caps the delay before a requeue; it must not be less than
	// RequeueDelay. Keep it well under the broker's consumer_timeout (30 minutes by
	// default), after which RabbitMQ closes the channel of an unacknowledged delivery.
	// Defaults to DefaultMaxRequeueDelay.
	MaxRequeueDelay time.Duration
	// Logger receives failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field of c that cannot work.
func (c Config) Validate() error {
	if c.RequeueDelay < 0 {
		return fieldError("RequeueDelay", fmt.Sprintf("must not be negative, got %s", c.RequeueDelay))
	}
	if c.MaxRequeueDelay < 0 {
		return fieldError("MaxRequeueDelay", fmt.Sprintf("must not be negative, got %s", c.MaxRequeueDelay))
	}
	if d := c.withDefaults(); d.MaxRequeueDelay < d.RequeueDelay {
		return fieldError("MaxRequeueDelay", fmt.Sprintf("%s is less than RequeueDelay (%s)", d.MaxRequeueDelay, d.RequeueDelay))
	}
	return nil
}

func fieldError(field, problem string) error {
	return &outbox.FieldError{Field: "amqpinbox.Config." + field, Problem: problem}
}

func (c Config) withDefaults() Config {
	c.RequeueDelay = cmp.Or(c.RequeueDelay, DefaultRequeueDelay)
	c.MaxRequeueDelay = cmp.Or(c.MaxRequeueDelay, DefaultMaxRequeueDelay)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Consumer applies deliveries through an inbox. It is safe for concurrent use.
type Consumer struct {
	ib  *inbox.Inbox
	fn  Func
	cfg Config
	log *slog.Logger
	// failures counts the failures in a row, across the Consumer's goroutines: what
	// fails them (a database down) is usually shared, so they back off together.
	failures atomic.Uint64
	wait     func(ctx context.Context, d time.Duration) // sleep; tests record the delays
}

// New returns a Consumer applying fn to each message once, recorded in ib.
func New(ib *inbox.Inbox, fn Func, cfg Config) (*Consumer, error) {
	if ib == nil || fn == nil {
		return nil, &outbox.FieldError{Field: "amqpinbox.New", Problem: "inbox and fn must not be nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Consumer{ib: ib, fn: fn, cfg: cfg, log: cfg.Logger.With("component", "outbox.amqpinbox"), wait: sleep}, nil
}

// Handle applies d (unless it is a duplicate), then acknowledges, requeues or rejects
// it as the package documentation says. It returns what became of the message, and
// the error that made it fail, if any (the delivery has been answered either way).
func (c *Consumer) Handle(ctx context.Context, d amqp.Delivery) (inbox.Result, error) {
	if d.MessageId == "" {
		return inbox.Failed, errors.Join(ErrNoID, c.reject(d, ErrNoID))
	}
	applied, err := c.ib.Process(ctx, d.MessageId, func(tx *sql.Tx) error { return c.fn(ctx, tx, d) })
	switch {
	case err == nil:
		c.failures.Store(0)
		r := inbox.Duplicate
		if applied {
			r = inbox.Applied
		}
		// A lost ack is a redelivery, which the inbox absorbs.
		if aerr := d.Ack(false); aerr != nil {
			return r, fmt.Errorf("amqpinbox: ack %s: %w", d.MessageId, aerr)
		}
		return r, nil
	case errors.Is(err, inbox.ErrExpired):
		return inbox.Expired, errors.Join(err, c.reject(d, err))
	case outbox.IsPermanent(err), errors.Is(err, outbox.ErrInvalid):
		return inbox.Failed, errors.Join(err, c.reject(d, err))
	default:
		c.wait(ctx, c.requeueDelay(c.failures.Add(1)))
		if nerr := d.Nack(false, true); nerr != nil {
			err = errors.Join(err, fmt.Errorf("amqpinbox: nack %s: %w", d.MessageId, nerr))
		}
		return inbox.Failed, err
	}
}

// requeueDelay is the wait before requeueing after the nth failure in a row.
func (c *Consumer) requeueDelay(n uint64) time.Duration {
	d, most := c.cfg.RequeueDelay, c.cfg.MaxRequeueDelay
	for ; n > 1 && d < most; n-- {
		if d > most/2 { // doubling would pass the cap (or overflow)
			return most
		}
		d *= 2
	}
	return min(d, most)
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (c *Consumer) reject(d amqp.Delivery, why error) error {
	c.log.Warn("rejecting delivery", "routing_key", d.RoutingKey, "message_id", d.MessageId, "err", why)
	if err := d.Reject(false); err != nil {
		return fmt.Errorf("amqpinbox: reject: %w", err)
	}
	return nil
}

// Run Handles deliveries one at a time until ctx ends (it returns ctx's error) or the
// channel closes (it returns nil), logging failures. Run several for concurrency.
func (c *Consumer) Run(ctx context.Context, deliveries <-chan amqp.Delivery) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d, ok := <-deliveries:
			if !ok {
				return nil
			}
			if _, err := c.Handle(ctx, d); err != nil && ctx.Err() == nil {
				c.log.Warn("delivery not applied", "routing_key", d.RoutingKey, "err", err)
			}
		}
	}
}
