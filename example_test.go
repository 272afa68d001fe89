package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// openExample opens a fresh SQLite outbox in a temporary directory.
func openExample() (*sqlite.Store, func()) {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE progress_entries (id TEXT PRIMARY KEY, kind TEXT, quantity REAL)`); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		log.Fatal(err)
	}
	return store, func() { db.Close(); os.RemoveAll(dir) }
}

// The main flow: save an entry and its event in one transaction, then let a
// processor deliver it.
func Example() {
	store, done := openExample()
	defer done()
	ctx := context.Background()

	err := store.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO progress_entries VALUES ('entry-1', 'weight', 72.5)`); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", "entry-1", "user-1")
		e.IsNewRecord, e.Priority, e.OrderingKey = true, 10, "entry-1"
		return store.EnqueueTx(ctx, tx, e)
	})
	if err != nil {
		log.Fatal(err)
	}

	sync := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		fmt.Printf("syncing %s %s for %s\n", e.Type, e.EntityID, e.UserID)
		return nil
	})
	p, err := outbox.NewProcessor(store, outbox.Handlers{"order.created": sync},
		outbox.Config{UserID: "user-1", Logger: outboxtest.Discard})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		log.Fatal(err)
	}
	stats, _ := p.Stats(ctx)
	fmt.Printf("completed %d of %d, success rate %.0f%%\n", stats.Completed, stats.Total, stats.SuccessRate()*100)
	// Output:
	// syncing order.created entry-1 for user-1
	// completed 1 of 1, success rate 100%
}

// A failed delivery is retried after the policy's delay; a permanent error gives the
// event up at once, keeping it for an operator.
func ExampleProcessor_ProcessBatch() {
	store, done := openExample()
	defer done()
	ctx := context.Background()
	clock := outboxtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

	flaky := outbox.NewEvent("order.created", "flaky", "u")
	rejected := outbox.NewEvent("order.created", "rejected", "u")
	if err := store.Enqueue(ctx, clock.Now(), flaky, rejected); err != nil {
		log.Fatal(err)
	}
	failures := 0
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		if e.EntityID == "rejected" {
			return outbox.Permanent(errors.New("400 Bad Request"))
		}
		if failures++; failures == 1 {
			return errors.New("503 Service Unavailable")
		}
		return nil
	})
	p, _ := outbox.NewProcessor(store, h, outbox.Config{
		Clock: clock, MaxConcurrent: 1, Retry: outbox.RetryPolicy{Jitter: -1}, Logger: outboxtest.Discard})

	p.ProcessBatch(ctx)
	for _, id := range []string{flaky.ID, rejected.ID} {
		e, _ := store.Get(ctx, id)
		fmt.Printf("%s: %s, given up %v, next attempt in %s, error %q\n",
			e.EntityID, e.Status, e.GivenUp(), max(e.NextAttemptAt.Sub(clock.Now()), 0), e.LastError)
	}
	clock.Advance(time.Second)
	p.ProcessBatch(ctx)
	e, _ := store.Get(ctx, flaky.ID)
	fmt.Printf("%s: %s after %d attempts\n", e.EntityID, e.Status, e.Attempts)
	// Output:
	// flaky: failed, given up false, next attempt in 1s, error "503 Service Unavailable"
	// rejected: failed, given up true, next attempt in 0s, error "permanent: 400 Bad Request"
	// flaky: completed after 2 attempts
}

// An unreachable destination is an outage, not a fault of the events: the attempts
// are not counted, and after Breaker.Threshold of them in a row the processor pauses
// and probes with one event until the destination answers again.
func ExampleUnavailable() {
	store, done := openExample()
	defer done()
	ctx := context.Background()
	clock := outboxtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var events []*outbox.Event
	for i := range 3 {
		events = append(events, outbox.NewEvent("order.created", fmt.Sprint("order-", i), "u"))
	}
	if err := store.Enqueue(ctx, clock.Now(), events...); err != nil {
		log.Fatal(err)
	}
	online := false
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		if !online {
			return outbox.Unavailable(errors.New("broker down"))
		}
		return nil
	})
	p, _ := outbox.NewProcessor(store, h, outbox.Config{
		Clock: clock, MaxConcurrent: 1, Breaker: outbox.BreakerConfig{Threshold: 2}, Logger: outboxtest.Discard})

	p.ProcessBatch(ctx) // two fail as unavailable: the circuit opens, the third is handed back unattempted
	b := p.Breaker()
	fmt.Printf("open %v, next probe in %s\n", b.Open, b.NextProbe.Sub(clock.Now()))
	e, _ := store.Get(ctx, events[0].ID)
	fmt.Printf("%s: %s, %d attempts counted\n", e.EntityID, e.Status, e.Attempts)

	online = true
	clock.Advance(time.Second)
	p.ProcessBatch(ctx) // the probe: one event, delivered; the circuit closes
	p.Drain(ctx)
	st, _ := p.Stats(ctx)
	fmt.Printf("open %v, %d completed, %d given up\n", p.Breaker().Open, st.Completed, st.GivenUp)
	// Output:
	// open true, next probe in 1s
	// order-0: pending, 0 attempts counted
	// open false, 3 completed, 0 given up
}
