package postgres_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The event log (the default layout; docs/log-layout.md): an order and its event in one
// transaction through Log.Transact, which sends the event's INSERT with the COMMIT, so
// the event costs no round trip of its own.
func ExampleLog_Transact() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := postgres.MigrateLog(ctx, pool, postgres.LogConfig{}); err != nil {
		log.Fatal(err)
	}
	events, err := postgres.NewLog(ctx, pool, postgres.LogConfig{})
	if err != nil {
		log.Fatal(err)
	}

	err = events.Transact(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, "order-1", 42.50); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", "order-1", "user-1")
		e.OrderingKey = "order-1" // the key's events are delivered one at a time, in commit order
		return events.AppendTx(ctx, tx, e)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A log relay: it delivers the log by its cursor, and moves an event whose delivery
// fails to the events table, where a Processor retries it as any event. Any number of
// processes run the same code; they share the log's shards.
func ExampleLogRelay() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	// The events table first (the log's failures go there), then the log.
	if _, err := postgres.Migrate(ctx, pool, postgres.Config{}); err != nil {
		log.Fatal(err)
	}
	if _, err := postgres.MigrateLog(ctx, pool, postgres.LogConfig{}); err != nil {
		log.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	events, err := postgres.NewLog(ctx, pool, postgres.LogConfig{})
	if err != nil {
		log.Fatal(err)
	}

	deliver := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		return nil // publish e; an error moves it to the events table, to be retried there
	})
	relay, err := postgres.NewLogRelay(ctx, events, store, deliver, postgres.LogRelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, deliver, outbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	go func() {
		<-ctx.Done()
		_ = relay.Stop(context.Background()) // lets the step in flight commit
	}()
	if err := relay.Run(context.WithoutCancel(ctx)); err != nil {
		log.Fatal(err)
	}
	if err := p.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
}
