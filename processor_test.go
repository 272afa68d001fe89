package outbox_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

func newStore(t testing.TB) *sqlite.Store {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.New(context.Background(), db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// delivered returns a handler that reports each delivered event on a channel.
func delivered() (outbox.Handler, <-chan outbox.Event) {
	ch := make(chan outbox.Event, 1000)
	return outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		ch <- e
		return nil
	}), ch
}

func waitFor(t *testing.T, ch <-chan outbox.Event) outbox.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return outbox.Event{}
	}
}

func TestStartStopLeavesNoGoroutineAndRestarts(t *testing.T) {
	store := newStore(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h, got := delivered()
	// A poll interval of an hour: deliveries below can only come from wake-ups.
	p, err := outbox.NewProcessor(store, h, outbox.Config{PollInterval: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for round := range 3 {
		if err := p.Start(ctx); err != nil {
			t.Fatalf("round %d: Start: %v", round, err)
		}
		if err := p.Start(ctx); err == nil {
			t.Fatalf("round %d: a second Start of a running processor succeeded", round)
		}
		e := outbox.NewEvent("t", "e", "u")
		if err := store.Enqueue(ctx, time.Now(), e); err != nil {
			t.Fatal(err)
		}
		if d := waitFor(t, got); d.ID != e.ID {
			t.Fatalf("delivered %s, want %s", d.ID, e.ID)
		}
		if err := p.Stop(ctx); err != nil {
			t.Fatalf("round %d: Stop: %v", round, err)
		}
	}
	if err := p.Stop(ctx); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("Stop of a stopped processor = %v, want ErrClosed", err)
	}
}

// claimObserver reports each claim's size on a channel.
type claimObserver chan int

func (o claimObserver) ObserveClaim(n int, _ time.Duration)                         { o <- n }
func (o claimObserver) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {}

func TestTriggerRunsACycleNow(t *testing.T) {
	store := newStore(t)
	h, got := delivered()
	claims := make(claimObserver, 100)
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		PollInterval: time.Hour, UserID: "alice", Logger: outboxtest.Discard, Observer: claims})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	if n := <-claims; n != 0 {
		t.Fatalf("the start-up cycle claimed %d events from an empty store", n)
	}
	// Written with plain SQL, so that no store notification wakes the processor.
	e := outbox.NewEvent("t", "e", "alice")
	if err := e.Prepare(time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := store.DB().ExecContext(ctx, `INSERT INTO outbox_events (id, type, entity_id, user_id, status, created_at, updated_at, next_attempt_at) VALUES (?, 't', 'e', 'alice', 'pending', 0, 0, 0)`, e.ID); err != nil {
		t.Fatal(err)
	}
	p.Trigger("bob") // not this processor's user: ignored
	select {
	case n := <-claims:
		t.Fatalf("a trigger for another user ran a cycle (claimed %d)", n)
	case <-time.After(100 * time.Millisecond):
	}
	p.Trigger("alice")
	if n := <-claims; n != 1 {
		t.Fatalf("the triggered cycle claimed %d events, want 1", n)
	}
	if d := waitFor(t, got); d.ID != e.ID {
		t.Fatalf("delivered %s", d.ID)
	}
}

// With BatchesInFlight 2 a running processor works on two batches at once: here two
// batches of one event each, whose deliveries can only finish together.
func TestBatchesInFlightOverlap(t *testing.T) {
	store := newStore(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := store.Enqueue(ctx, time.Now(), outbox.NewEvent("t", id, "u")); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan string, 2)
	together := make(chan struct{})
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		started <- e.EntityID
		select {
		case <-together:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		BatchSize: 1, BatchesInFlight: 2, PollInterval: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the second batch's delivery did not start while the first one's was in flight")
		}
	}
	close(together)
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Stats(ctx); err != nil || st.Completed != 2 {
		t.Fatalf("stats %+v, %v: want both completed", st, err)
	}
	if _, err := outbox.NewProcessor(store, h, outbox.Config{BatchesInFlight: -1}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("BatchesInFlight -1: %v, want ErrInvalid", err)
	}
}
