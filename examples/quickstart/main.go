// Command quickstart writes an order and the event that announces it in one SQLite
// transaction, on the event log, then delivers the event. It is the README's program,
// shown there whole.
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
	// The event log, where events are written, and the events table, where an event
	// whose delivery failed is retried: embedded, versioned migrations.
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		return err
	}
	if _, err := sqlite.MigrateLog(ctx, db); err != nil {
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
	events, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{})
	if err != nil {
		return err
	}

	// The order and its event: both committed, or neither.
	err = events.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ('order-1', 42.50)`); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", "order-1", "user-1")
		e.OrderingKey = "order-1" // events of one order are delivered in the order written
		return events.AppendTx(ctx, tx, e)
	})
	if err != nil {
		return err
	}

	// Each type's handler: nil is delivered; an error is retried with backoff.
	deliver := outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			fmt.Println("delivered", e.Type, e.EntityID)
			return nil
		}),
	}
	// The relay delivers the log in commit order. An event whose delivery fails moves to
	// the events table, with the later events of its key, where the processor retries it.
	relay, err := sqlite.NewLogRelay(ctx, events, store, deliver, sqlite.LogRelayConfig{})
	if err != nil {
		return err
	}
	p, err := outbox.NewProcessor(store, deliver, outbox.Config{})
	if err != nil {
		return err
	}
	step, err := relay.Drain(ctx) // a service calls relay.Run(ctx) and p.Start(ctx) instead
	if err != nil {
		return err
	}
	if _, err := p.Drain(ctx); err != nil {
		return err
	}
	fmt.Printf("read %d from the log: %d delivered, %d to retry\n", step.Read, step.Delivered, step.Failed)
	return nil
}
