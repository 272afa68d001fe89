// Command quickstart writes an order and the event that announces it in one SQLite
// transaction, then delivers the event. It is the README's program, shown there whole.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "outbox-quickstart") // a fresh database on every run
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{}) // WAL, busy timeout, immediate writes
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := sqlite.Migrate(ctx, db); err != nil { // embedded, versioned; New refuses an unmigrated file
		return err
	}
	// The application's own table, in the same database as the outbox.
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL)`); err != nil {
		return err
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		return err
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
		return err
	}

	// The processor delivers due events through the handler of their type.
	p, err := outbox.NewProcessor(store, outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			fmt.Println("delivered", e.Type, e.EntityID) // nil: delivered; an error: retried with backoff
			return nil
		}),
	}, outbox.Config{})
	if err != nil {
		return err
	}
	if _, err := p.Drain(ctx); err != nil { // a relay calls p.Start(ctx) and p.Stop(ctx) instead
		return err
	}
	stats, err := p.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("completed %d of %d\n", stats.Completed, stats.Total)
	return nil
}
