package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
)

// quiet keeps the examples' output to what they print; an application leaves Logger
// unset (slog.Default) or passes its own.
var quiet = slog.New(slog.DiscardHandler)

// openDB opens a migrated database in a fresh directory, with an orders table beside
// the outbox, and returns a function that removes it.
func openDB(ctx context.Context) (*sql.DB, func()) {
	dir, err := os.MkdirTemp("", "outbox-sqlite-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL)`); err != nil {
		log.Fatal(err)
	}
	return db, func() { db.Close(); os.RemoveAll(dir) }
}

// An order and the event announcing it are written in one transaction; a processor
// then delivers the event.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-sqlite-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{}) // WAL, busy timeout, immediate writes
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := sqlite.Migrate(ctx, db); err != nil { // embedded, versioned; New refuses an unmigrated file
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL)`); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}

	// The order and its event: both committed, or neither.
	err = store.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ('order-1', 42.50)`); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", "order-1", "user-1")
		e.OrderingKey = "order-1" // events of one order are delivered in the order written
		return store.EnqueueTx(ctx, tx, e)
	})
	if err != nil {
		log.Fatal(err)
	}

	// The processor delivers due events through the handler of their type.
	p, err := outbox.NewProcessor(store, outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			fmt.Println("delivered", e.Type, e.EntityID) // nil: delivered; an error: retried with backoff
			return nil
		}),
	}, outbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil { // a relay calls p.Start(ctx) and p.Stop(ctx) instead
		log.Fatal(err)
	}
	stats, err := p.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("completed %d of %d\n", stats.Completed, stats.Total)
	// Output:
	// delivered order.created order-1
	// completed 1 of 1
}

// EnqueueTx writes the event in a transaction the caller began and commits (or rolls
// back) itself: a rollback takes the event with it.
func ExampleStore_EnqueueTx() {
	ctx := context.Background()
	db, done := openDB(ctx)
	defer done()
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}

	for _, commit := range []bool{true, false} {
		id := fmt.Sprintf("order-commit-%v", commit)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES (?, 10)`, id); err != nil {
			log.Fatal(err)
		}
		if err := store.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", id, "user-1")); err != nil {
			log.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			log.Fatal(err)
		}
	}

	var orders int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM orders`).Scan(&orders); err != nil {
		log.Fatal(err)
	}
	events, err := store.List(ctx, outbox.Filter{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("orders:", orders)
	for _, e := range events {
		fmt.Println("event:", e.Type, e.EntityID, e.Status)
	}
	// Output:
	// orders: 1
	// event: order.created order-commit-true pending
}

// A running processor is woken by Transact's commit, so delivery does not wait for the
// next poll. Stop lets the delivery in flight finish and record its outcome.
func Example_running() {
	ctx := context.Background()
	db, done := openDB(ctx)
	defer done()
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}

	delivered := make(chan string)
	p, err := outbox.NewProcessor(store, outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			delivered <- e.EntityID
			return nil
		}),
	}, outbox.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}

	err = store.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ('order-2', 7)`); err != nil {
			return err
		}
		return store.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "order-2", "user-1"))
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered", <-delivered)
	if err := p.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// delivered order-2
}
