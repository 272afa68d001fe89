package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/sqlite"
)

// A message delivered twice has its effect once.
func ExampleInbox_Process() {
	dir, _ := os.MkdirTemp("", "inbox-example")
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "receiver.db"), sqlite.OpenConfig{})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	ctx := context.Background()
	db.Exec(`CREATE TABLE orders (id TEXT NOT NULL, total INTEGER NOT NULL)`)
	cfg := inbox.Config{Dialect: inbox.SQLite}
	if _, err := inbox.Migrate(ctx, db, cfg); err != nil {
		panic(err)
	}
	ib, err := inbox.New(ctx, db, cfg)
	if err != nil {
		panic(err)
	}

	msgID := uuid.Must(uuid.NewV7()).String() // an outbox event ID, as httpsink or natssink deliver it
	for range 2 {
		applied, err := ib.Process(ctx, msgID, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ('order-1', 42)`)
			return err
		})
		fmt.Println("applied:", applied, "err:", err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM orders`).Scan(&n)
	fmt.Println("orders:", n)
	// Output:
	// applied: true err: <nil>
	// applied: false err: <nil>
	// orders: 1
}

// Cleanup deletes expired IDs one bounded batch at a time; run it on a schedule
// (hourly, say) until a batch comes back short.
func ExampleInbox_Cleanup() {
	dir, _ := os.MkdirTemp("", "inbox-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "receiver.db"), sqlite.OpenConfig{})
	defer db.Close()
	ctx := context.Background()
	cfg := inbox.Config{Dialect: inbox.SQLite}
	inbox.Migrate(ctx, db, cfg)
	ib, _ := inbox.New(ctx, db, cfg)
	for _, id := range []string{"a", "b", "c"} {
		ib.Process(ctx, id, func(*sql.Tx) error { return nil })
	}

	const batch = 2
	total := 0
	for later := time.Now().Add(inbox.DefaultRetention + time.Minute); ; {
		n, err := ib.Cleanup(ctx, later, batch)
		if err != nil {
			panic(err)
		}
		total += n
		if n < batch {
			break
		}
	}
	fmt.Println("deleted:", total)
	// Output: deleted: 3
}
