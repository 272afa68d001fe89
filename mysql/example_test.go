package mysql_test

import (
	"context"
	"database/sql"
	"log"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

// An application writes its row and the event that announces it in one transaction;
// a processor (here in the same process, woken by the commit) delivers the event.
func Example() {
	ctx := context.Background()
	cfg, err := mysql.ParseDSN("mysql://app:secret@127.0.0.1:3306/shop")
	if err != nil {
		log.Fatal(err)
	}
	cfg.InterpolateParams = true // one round trip per statement
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()

	if _, err := mysql.Migrate(ctx, db, mysql.Config{}); err != nil {
		log.Fatal(err)
	}
	store, err := mysql.New(ctx, db, mysql.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	err = store.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES (?, ?)`, "o-1", 42); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", "o-1", "customer-7")
		e.OrderingKey = "o-1" // later events of this order wait for this one
		return store.EnqueueTx(ctx, tx, e)
	})
	if err != nil {
		log.Fatal(err)
	}

	p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		log.Printf("deliver %s %s", e.Type, e.EntityID)
		return nil
	}), outbox.Config{PollInterval: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(ctx)
}
