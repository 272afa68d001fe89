// Package amqpinbox consumes RabbitMQ (AMQP 0-9-1) deliveries through an inbox: each
// message's effect is applied once per message-id (the property amqpsink sets to the
// event ID), in the receiver's database transaction, and the delivery is acknowledged
// only after that transaction has committed. Consume with manual acknowledgements
// (autoAck false).
//
// What becomes of a delivery:
//
//	applied, or a duplicate                 Ack (after the commit)
//	effect failed, database failed          Nack, requeued: delivered again, applied then
//	effect failed with outbox.Permanent     Reject, not requeued (dead-lettered if the queue has a dead-letter exchange)
//	no message-id, older than the window    Reject, not requeued
//
// A requeued message comes back at once; a queue whose effects fail for a while
// should get its delay from a dead-letter exchange with a message TTL. A consumer that
// dies between the commit and the Ack gets the message again when the broker notices
// the closed connection; the inbox recognises it and it is acknowledged then.
package amqpinbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

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

// Config tunes a Consumer.
type Config struct {
	// Logger receives failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field of c that cannot work; every Config is valid today.
func (c Config) Validate() error { return nil }

// Consumer applies deliveries through an inbox. It is safe for concurrent use.
type Consumer struct {
	ib  *inbox.Inbox
	fn  Func
	log *slog.Logger
}

// New returns a Consumer applying fn to each message once, recorded in ib.
func New(ib *inbox.Inbox, fn Func, cfg Config) (*Consumer, error) {
	if ib == nil || fn == nil {
		return nil, &outbox.FieldError{Field: "amqpinbox.New", Problem: "inbox and fn must not be nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Consumer{ib: ib, fn: fn, log: log.With("component", "outbox.amqpinbox")}, nil
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
		if nerr := d.Nack(false, true); nerr != nil {
			err = errors.Join(err, fmt.Errorf("amqpinbox: nack %s: %w", d.MessageId, nerr))
		}
		return inbox.Failed, err
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
