// Package natsinbox consumes NATS JetStream messages through an inbox: each message's
// effect is applied once per Nats-Msg-Id (the header natssink sets to the event ID),
// in the receiver's database transaction, and the message is acknowledged only after
// that transaction has committed.
//
// What becomes of a message:
//
//	applied, or a duplicate                 Ack (after the commit)
//	effect failed, database failed          Nak with NakDelay: redelivered, applied then
//	effect failed with outbox.Permanent     Term: not redelivered (JetStream advisories report it)
//	no Nats-Msg-Id, older than the window   Term
//
// A consumer that dies between the commit and the Ack gets the message again after
// the consumer's AckWait; the inbox recognises it and it is acknowledged then. A stream's
// own duplicate window drops messages published twice within it; the inbox also covers
// redeliveries to the consumer, and publishes further apart than that window.
package natsinbox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
)

// DefaultNakDelay is how long a failed message waits before JetStream redelivers it.
const DefaultNakDelay = time.Second

// ErrNoID: the message has no Nats-Msg-Id header, so a redelivery could not be
// recognised; it is terminated, not applied.
var ErrNoID = errors.New("natsinbox: message has no " + jetstream.MsgIDHeader + " header")

// Func applies one message's effect in tx. Return an error marked with
// outbox.Permanent to have the message terminated instead of redelivered.
type Func func(ctx context.Context, tx *sql.Tx, msg jetstream.Msg) error

// Config tunes a Consumer.
type Config struct {
	// NakDelay is how long JetStream waits before redelivering a message whose effect
	// failed. Defaults to DefaultNakDelay.
	NakDelay time.Duration
	// Logger receives failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field of c that cannot work.
func (c Config) Validate() error {
	if c.NakDelay < 0 {
		return &outbox.FieldError{Field: "natsinbox.Config.NakDelay", Problem: fmt.Sprintf("must not be negative, got %s", c.NakDelay)}
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.NakDelay = cmp.Or(c.NakDelay, DefaultNakDelay)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Consumer applies messages through an inbox. It is safe for concurrent use.
type Consumer struct {
	ib  *inbox.Inbox
	fn  Func
	cfg Config
	log *slog.Logger
}

// New returns a Consumer applying fn to each message once, recorded in ib.
func New(ib *inbox.Inbox, fn Func, cfg Config) (*Consumer, error) {
	if ib == nil || fn == nil {
		return nil, &outbox.FieldError{Field: "natsinbox.New", Problem: "inbox and fn must not be nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Consumer{ib: ib, fn: fn, cfg: cfg, log: cfg.Logger.With("component", "outbox.natsinbox")}, nil
}

// Handle applies msg (unless it is a duplicate), then acknowledges, naks or
// terminates it as the package documentation says. It returns what became of the
// message, and the error that made it fail, if any (the message has been answered
// either way).
func (c *Consumer) Handle(ctx context.Context, msg jetstream.Msg) (inbox.Result, error) {
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	if id == "" {
		return inbox.Failed, errors.Join(ErrNoID, c.term(msg, ErrNoID))
	}
	applied, err := c.ib.Process(ctx, id, func(tx *sql.Tx) error { return c.fn(ctx, tx, msg) })
	switch {
	case err == nil:
		r := inbox.Duplicate
		if applied {
			r = inbox.Applied
		}
		// A lost ack is a redelivery, which the inbox absorbs.
		if aerr := msg.Ack(); aerr != nil {
			return r, fmt.Errorf("natsinbox: ack %s: %w", id, aerr)
		}
		return r, nil
	case errors.Is(err, inbox.ErrExpired):
		return inbox.Expired, errors.Join(err, c.term(msg, err))
	case outbox.IsPermanent(err), errors.Is(err, outbox.ErrInvalid):
		return inbox.Failed, errors.Join(err, c.term(msg, err))
	default:
		if nerr := msg.NakWithDelay(c.cfg.NakDelay); nerr != nil {
			err = errors.Join(err, fmt.Errorf("natsinbox: nak %s: %w", id, nerr))
		}
		return inbox.Failed, err
	}
}

func (c *Consumer) term(msg jetstream.Msg, why error) error {
	c.log.Warn("terminating message", "subject", msg.Subject(), "err", why)
	if err := msg.Term(); err != nil { // not TermWithReason: servers before 2.11 ignore it, and redeliver
		return fmt.Errorf("natsinbox: term: %w", err)
	}
	return nil
}

// MessageHandler returns a handler for jetstream.Consumer.Consume that Handles each
// message under ctx, logging failures.
func (c *Consumer) MessageHandler(ctx context.Context) jetstream.MessageHandler {
	return func(msg jetstream.Msg) {
		if _, err := c.Handle(ctx, msg); err != nil && ctx.Err() == nil {
			c.log.Warn("message not applied", "subject", msg.Subject(), "err", err)
		}
	}
}
