package postgres_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// These examples need a PostgreSQL server, so they are compiled but not run.

// A relay: any number of processes run the same code on one database; claims never
// overlap, and LISTEN/NOTIFY wakes them as soon as an enqueue commits.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool, err := pgxpool.New(ctx, "postgres://app@db.internal:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := postgres.Migrate(ctx, pool, postgres.Config{}); err != nil { // embedded, versioned, safe from every relay
		log.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, postgres.Config{}) // refuses a schema that is not migrated
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // stops the LISTEN connection (not the pool)

	deliver := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		return nil // publish e; nil completes it, an error retries it
	})
	p, err := outbox.NewProcessor(store, deliver, outbox.Config{BatchSize: 500, BatchesInFlight: 2})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()
	if err := p.Stop(context.Background()); err != nil { // finishes deliveries in flight, releases the rest
		log.Fatal(err)
	}
}

// Transact runs fn in a pgx transaction and commits it when fn returns nil: the order
// and its event are written together or not at all.
func ExampleStore_Transact() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	err = store.Transact(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, "order-1", 42.50); err != nil {
			return err
		}
		return store.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "order-1", "user-1"))
	})
	if err != nil {
		log.Fatal(err)
	}
}

// EnqueueTx writes events in a pgx transaction the caller owns. The NOTIFY goes in the
// same statement, so relays are woken when, and only if, the caller commits.
func ExampleStore_EnqueueTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, `UPDATE orders SET status = 'paid' WHERE id = $1`, "order-1"); err != nil {
		log.Fatal(err)
	}
	e := outbox.NewEvent("order.paid", "order-1", "user-1")
	e.OrderingKey = "order-1" // never delivered before the order's earlier events
	if err := store.EnqueueTx(ctx, tx, e); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}

// EnqueueSQLTx does the same for a database/sql application, on pgx's stdlib driver.
func ExampleStore_EnqueueSQLTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	db := stdlib.OpenDBFromPool(pool) // or sql.Open("pgx", dsn)
	defer db.Close()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, "order-2", 7); err != nil {
		log.Fatal(err)
	}
	if err := store.EnqueueSQLTx(ctx, tx, outbox.NewEvent("order.created", "order-2", "user-1")); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
}
