package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// watermillSystem is Watermill's outbox: the SQL publisher, wrapped by the forwarder's
// publisher, inserts an envelope in the business transaction; the forwarder reads the
// SQL topic with the SQL subscriber and publishes each message to the receiver.
// Tables are the PostgreSQL schema adapter's and offsets adapter's defaults.
type watermillSystem struct {
	pool *pgxpool.Pool
}

const (
	watermillForwarderTopic = "outbox" // the SQL table the forwarder reads
	watermillDestTopic      = "orders" // where the forwarder publishes
)

func newWatermill(ctx context.Context, dsn string) (system, error) {
	pool, err := newPool(ctx, dsn, schemaWater, poolMaxConns)
	if err != nil {
		return nil, err
	}
	s := &watermillSystem{pool: pool}
	if err := s.setup(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("watermill: %w", err)
	}
	return s, nil
}

func (s *watermillSystem) subscriberConfig(v variant) wsql.SubscriberConfig {
	return wsql.SubscriberConfig{
		SchemaAdapter:  wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: v.SubscribeBatch},
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
	}
}

func (s *watermillSystem) setup(ctx context.Context) error {
	if err := recreateSchema(ctx, s.pool, schemaWater); err != nil {
		return err
	}
	// Tables are made up front, as a transactional publisher may not create them.
	cfg := s.subscriberConfig(variant{})
	cfg.InitializeSchema = true
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(s.pool), cfg, watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(watermillForwarderTopic)
}

func (s *watermillSystem) Name() string        { return "watermill" }
func (s *watermillSystem) Pool() *pgxpool.Pool { return s.pool }

func (s *watermillSystem) publisher(db wsql.ContextExecutor) (message.Publisher, error) {
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: watermillForwarderTopic}), nil
}

func (s *watermillSystem) EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (string, error) {
	pub, err := s.publisher(wsql.TxFromPgx(tx))
	if err != nil {
		return "", err
	}
	msg := message.NewMessage(watermill.NewUUID(), o.payload())
	msg.SetContext(ctx)
	return msg.UUID, pub.Publish(watermillDestTopic, msg)
}

func (s *watermillSystem) Preload(ctx context.Context, _ variant, n int) error {
	const chunk = 5000 // three parameters a row, under PostgreSQL's 65,535
	for done := 0; done < n; done += chunk {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			pub, err := s.publisher(wsql.TxFromPgx(tx))
			if err != nil {
				return err
			}
			msgs := make([]*message.Message, 0, min(chunk, n-done))
			for i := range cap(msgs) {
				msg := message.NewMessage(watermill.NewUUID(), newOrder(0, done+i).payload())
				msg.SetContext(ctx)
				msgs = append(msgs, msg)
			}
			return pub.Publish(watermillDestTopic, msgs...)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *watermillSystem) Reset(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE orders, `+wsql.DefaultPostgreSQLSchema{}.MessagesTable(watermillForwarderTopic)+`, `+
		wsql.DefaultPostgreSQLOffsetsAdapter{}.MessagesOffsetsTable(watermillForwarderTopic))
	return err
}

// receiver is the forwarder's destination publisher: it hands every message to the
// no-op receiver.
type receiver struct{ deliver func(string) }

func (r receiver) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		r.deliver(m.UUID)
	}
	return nil
}

func (r receiver) Close() error { return nil }

func (s *watermillSystem) Consume(ctx context.Context, v variant, deliver func(string)) (func(context.Context) error, error) {
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(s.pool), s.subscriberConfig(v), watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	fwd, err := forwarder.NewForwarder(sub, receiver{deliver}, watermill.NopLogger{}, forwarder.Config{ForwarderTopic: watermillForwarderTopic})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	runErr := make(chan error, 1)
	go func() { runErr <- fwd.Run(runCtx) }()
	select {
	case <-fwd.Running():
	case err := <-runErr:
		cancel()
		return nil, fmt.Errorf("forwarder stopped at start: %w", err)
	}
	return func(context.Context) error {
		err := fwd.Close()
		cancel()
		return errors.Join(err, <-runErr, sub.Close())
	}, nil
}

func (s *watermillSystem) Close() { s.pool.Close() }
