// Package inbox is the receiving side of the outbox: it turns at-least-once delivery
// into effects applied once. The receiver applies a message's effect inside its own
// database transaction together with a record of the message's ID; a redelivered
// message finds its ID recorded and has no second effect, and an effect that fails
// rolls its ID back with it, so the message is applied when it comes again.
//
//	ib, err := inbox.New(ctx, db, inbox.Config{Dialect: inbox.Postgres})
//	...
//	applied, err := ib.Process(ctx, msgID, func(tx *sql.Tx) error {
//		_, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2`, amount, account)
//		return err
//	})
//
// IDs are kept for Config.Retention (30 days by default) and deleted by Cleanup in
// bounded batches; a message older than the window is refused with ErrExpired, so
// the guarantee is: within the window, each message has its effect once.
//
// Consumers that use it: httpinbox (an HTTP middleware keyed on Idempotency-Key, as
// sent by the outbox's httpsink), natsinbox (JetStream, keyed on Nats-Msg-Id) and
// amqpinbox (RabbitMQ, keyed on message-id).
package inbox
