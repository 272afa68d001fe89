package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

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
	case <-time.After(time.Minute): // generous: a busy machine must not fail it
		t.Fatal("no delivery within a minute")
		return outbox.Event{}
	}
}

func TestStartStopLeavesNoGoroutineAndRestarts(t *testing.T) {
	store := sqlitetest.NewStore(t)
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
	store := sqlitetest.NewStore(t)
	h, got := delivered()
	claims := make(claimObserver, 100)
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		PollInterval: time.Hour, UserID: "alice", Logger: outboxtest.Discard, Observers: []outbox.Observer{claims}})
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

func newProcessor(t *testing.T, s outbox.Store, h outbox.Handler, cfg outbox.Config) *outbox.Processor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	p, err := outbox.NewProcessor(s, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func enqueue(t *testing.T, s outbox.Store, now time.Time, n int) []*outbox.Event {
	t.Helper()
	var events []*outbox.Event
	for i := range n {
		events = append(events, outbox.NewEvent("order.created", fmt.Sprintf("entry-%d", i), "u"))
	}
	if err := s.Enqueue(context.Background(), now, events...); err != nil {
		t.Fatal(err)
	}
	return events
}

func mustGet(t *testing.T, s outbox.Store, id string) outbox.Event {
	t.Helper()
	e, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNewProcessorRejectsBadConfig(t *testing.T) {
	store := sqlitetest.NewStore(t)
	noop := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
	tests := []struct {
		name  string
		cfg   outbox.Config
		field string
	}{
		{"negative batch size", outbox.Config{BatchSize: -1}, "Config.BatchSize"},
		{"negative concurrency", outbox.Config{MaxConcurrent: -3}, "Config.MaxConcurrent"},
		{"negative poll interval", outbox.Config{PollInterval: -time.Second}, "Config.PollInterval"},
		{"negative lease", outbox.Config{LeaseDuration: -time.Second}, "Config.LeaseDuration"},
		{"negative retention", outbox.Config{Retention: -time.Hour}, "Config.Retention"},
		{"negative stale threshold", outbox.Config{StaleAfter: -time.Minute}, "Config.StaleAfter"},
		{"negative max attempts", outbox.Config{Retry: outbox.RetryPolicy{MaxAttempts: -1}}, "Config.Retry.MaxAttempts"},
		{"negative delay", outbox.Config{Retry: outbox.RetryPolicy{Delays: []time.Duration{time.Second, -time.Second}}}, "Config.Retry.Delays[1]"},
		{"jitter of 100%", outbox.Config{Retry: outbox.RetryPolicy{Jitter: 1}}, "Config.Retry.Jitter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := outbox.NewProcessor(store, noop, tc.cfg)
			var fe *outbox.FieldError
			if p != nil || !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("NewProcessor = %v, %v; want an error naming %s", p, err, tc.field)
			}
		})
	}
	if _, err := outbox.NewProcessor(nil, noop, outbox.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("nil store: %v", err)
	}
	if _, err := outbox.NewProcessor(store, nil, outbox.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("nil handler: %v", err)
	}
	if events, _ := store.List(context.Background(), outbox.Filter{}); len(events) != 0 {
		t.Fatalf("a rejected configuration wrote %d events", len(events))
	}
	p, err := outbox.NewProcessor(store, noop, outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config()
	if cfg.BatchSize != 10 || cfg.PollInterval != 2*time.Second || cfg.MaxConcurrent != 3 || cfg.CleanupInterval != time.Hour ||
		cfg.Retention != 7*24*time.Hour || cfg.StaleAfter != 5*time.Minute || cfg.Retry.MaxAttempts != 5 || cfg.Retry.Jitter != 0.1 {
		t.Fatalf("defaults are not the documented ones: %+v", cfg)
	}
}

func TestStopDrainsInFlightAndReleasesTheRest(t *testing.T) {
	store := sqlitetest.NewStore(t)
	events := enqueue(t, store, time.Now(), 10)
	started := make(chan string, 10)
	gate := make(chan struct{})
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		started <- e.ID
		<-gate
		return nil
	})
	p := newProcessor(t, store, h, outbox.Config{BatchSize: 10, MaxConcurrent: 2, PollInterval: time.Hour})
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	inFlight := map[string]bool{<-started: true, <-started: true}
	stopped := make(chan error)
	go func() { stopped <- p.Stop(ctx) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while two deliveries were in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, e := range events {
		got := mustGet(t, store, e.ID)
		switch {
		case inFlight[e.ID] && got.Status != outbox.StatusCompleted:
			t.Errorf("in-flight event %s ended %q, want completed", e.EntityID, got.Status)
		case !inFlight[e.ID] && (got.Status != outbox.StatusPending || got.Attempts != 0 || got.LeaseOwner != ""):
			t.Errorf("unstarted event %s: status %q attempts %d owner %q, want released: pending, 0, none",
				e.EntityID, got.Status, got.Attempts, got.LeaseOwner)
		}
	}
	if len(started) != 0 {
		t.Fatalf("%d deliveries started after Stop was called", len(started))
	}
}

func TestStopDeadlineCancelsAndReleasesInFlight(t *testing.T) {
	store := sqlitetest.NewStore(t)
	events := enqueue(t, store, time.Now(), 1)
	started := make(chan struct{})
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	p := newProcessor(t, store, h, outbox.Config{HandlerTimeout: -1})
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	if got := mustGet(t, store, events[0].ID); got.Status != outbox.StatusPending || got.Attempts != 0 {
		t.Fatalf("interrupted event: status %q attempts %d, want pending with the attempt not counted", got.Status, got.Attempts)
	}
}

func TestFailuresOfTheHandler(t *testing.T) {
	tests := []struct {
		name      string
		handler   outbox.HandlerFunc
		cfg       outbox.Config
		wantError string
		wantNext  time.Duration // 0: given up
	}{
		{"error", func(context.Context, outbox.Event) error { return errors.New("connection refused") },
			outbox.Config{}, "connection refused", time.Second},
		{"panic", func(context.Context, outbox.Event) error { panic("nil map") },
			outbox.Config{}, "handler panicked: nil map", time.Second},
		{"timeout", func(ctx context.Context, _ outbox.Event) error { <-ctx.Done(); return ctx.Err() },
			outbox.Config{HandlerTimeout: 10 * time.Millisecond}, "handler timed out after 10ms", time.Second},
		{"retry-after longer than the backoff", func(context.Context, outbox.Event) error {
			return outbox.RetryAfter(errors.New("429"), time.Minute)
		}, outbox.Config{}, "429", time.Minute},
		{"retry-after shorter than the backoff", func(context.Context, outbox.Event) error {
			return outbox.RetryAfter(errors.New("503"), 10*time.Millisecond)
		}, outbox.Config{}, "503", time.Second},
		{"permanent", func(context.Context, outbox.Event) error { return outbox.Permanent(errors.New("400")) },
			outbox.Config{}, "400", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := sqlitetest.NewStore(t)
			clock := outboxtest.NewClock(t0)
			events := enqueue(t, store, t0, 1)
			cfg := tc.cfg
			cfg.Clock, cfg.Retry = clock, outbox.RetryPolicy{Jitter: -1}
			p := newProcessor(t, store, tc.handler, cfg)
			if _, err := p.ProcessBatch(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := mustGet(t, store, events[0].ID)
			if got.Status != outbox.StatusFailed || !strings.Contains(got.LastError, tc.wantError) {
				t.Fatalf("status %q error %q, want failed with %q", got.Status, got.LastError, tc.wantError)
			}
			if tc.wantNext == 0 {
				if !got.GivenUp() {
					t.Fatalf("not given up: next attempt %v", got.NextAttemptAt)
				}
				return
			}
			if !got.NextAttemptAt.Equal(t0.Add(tc.wantNext)) {
				t.Fatalf("next attempt at +%s, want +%s", got.NextAttemptAt.Sub(t0), tc.wantNext)
			}
		})
	}
}

func TestHandlersGiveUpAnUnknownType(t *testing.T) {
	store := sqlitetest.NewStore(t)
	e := outbox.NewEvent("mealLogged", "m1", "u")
	if err := store.Enqueue(context.Background(), t0, e); err != nil {
		t.Fatal(err)
	}
	p := newProcessor(t, store, outbox.Handlers{}, outbox.Config{Clock: outboxtest.NewClock(t0)})
	p.ProcessBatch(context.Background())
	got := mustGet(t, store, e.ID)
	if !got.GivenUp() || !strings.Contains(got.LastError, `no handler for event type "mealLogged"`) {
		t.Fatalf("unknown type: given up %v, error %q", got.GivenUp(), got.LastError)
	}
}

// batchSink is a BatchHandler that fails the events whose entity ID starts with "bad".
type batchSink struct{ batches [][]string }

func (b *batchSink) Handle(ctx context.Context, e outbox.Event) error {
	return b.HandleBatch(ctx, []outbox.Event{e})[0]
}

func (b *batchSink) HandleBatch(_ context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	var ids []string
	for i, e := range events {
		ids = append(ids, e.EntityID)
		if strings.HasPrefix(e.EntityID, "bad") {
			errs[i] = errors.New("nack")
		}
	}
	b.batches = append(b.batches, ids)
	return errs
}

func TestBatchHandlerGetsTheWholeBatch(t *testing.T) {
	store := sqlitetest.NewStore(t)
	var events []*outbox.Event
	for _, id := range []string{"a", "bad-b", "c"} {
		events = append(events, outbox.NewEvent("t", id, "u"))
	}
	if err := store.Enqueue(context.Background(), t0, events...); err != nil {
		t.Fatal(err)
	}
	sink := &batchSink{}
	p := newProcessor(t, store, sink, outbox.Config{Clock: outboxtest.NewClock(t0)})
	p.ProcessBatch(context.Background())
	if len(sink.batches) != 1 || len(sink.batches[0]) != 3 {
		t.Fatalf("batches %v, want one of 3", sink.batches)
	}
	want := []outbox.Status{outbox.StatusCompleted, outbox.StatusFailed, outbox.StatusCompleted}
	for i, e := range events {
		if got := mustGet(t, store, e.ID); got.Status != want[i] {
			t.Errorf("%s: %q, want %q", e.EntityID, got.Status, want[i])
		}
	}
}

// flakyStore fails Settle a number of times, as a database that drops connections does.
type flakyStore struct {
	outbox.Store
	settleFailures atomic.Int32
}

func (f *flakyStore) Settle(ctx context.Context, owner string, now time.Time, o []outbox.Outcome) error {
	if f.settleFailures.Add(-1) >= 0 {
		return errors.New("driver: bad connection")
	}
	return f.Store.Settle(ctx, owner, now, o)
}

func TestOutcomesAreRecordedDespiteStoreFailures(t *testing.T) {
	store := &flakyStore{Store: sqlitetest.NewStore(t)}
	store.settleFailures.Store(3)
	events := enqueue(t, store, t0, 3)
	deliveries := 0
	h := outbox.HandlerFunc(func(context.Context, outbox.Event) error { deliveries++; return nil })
	p := newProcessor(t, store, h, outbox.Config{Clock: outboxtest.NewClock(t0), MaxConcurrent: 1})
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	for _, e := range events {
		if got := mustGet(t, store, e.ID); got.Status != outbox.StatusCompleted {
			t.Fatalf("%s ended %q after Settle failed 3 times, want completed", e.EntityID, got.Status)
		}
	}
	if deliveries != 3 {
		t.Fatalf("%d deliveries, want 3 (no redelivery)", deliveries)
	}
}

func TestCleanupDeletesCompletedPastRetention(t *testing.T) {
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(t0)
	enqueue(t, store, t0, 3)
	noop := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
	p := newProcessor(t, store, noop, outbox.Config{Clock: clock})
	p.Drain(context.Background())
	fresh := enqueue(t, store, t0, 1)
	clock.Advance(7*24*time.Hour + time.Second)
	n, err := p.Cleanup(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("Cleanup = %d, %v; want the 3 completed a week ago", n, err)
	}
	if left, _ := store.List(context.Background(), outbox.Filter{}); len(left) != 1 || left[0].ID != fresh[0].ID {
		t.Fatalf("left %d events, want only the pending one", len(left))
	}
}

func TestLogsTellEachEventsStory(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	clock := outboxtest.NewClock(t0)
	ok, flaky, doomed := outbox.NewEvent("t", "ok", "u"), outbox.NewEvent("t", "flaky", "u"), outbox.NewEvent("t", "doomed", "u")
	if err := store.Enqueue(ctx, t0, ok, flaky, doomed); err != nil {
		t.Fatal(err)
	}
	h := outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		switch e.EntityID {
		case "flaky":
			return errors.New("network error")
		case "doomed":
			return outbox.Permanent(errors.New("400"))
		}
		return nil
	})
	p := newProcessor(t, store, h, outbox.Config{Clock: clock, Logger: logger, Retry: outbox.RetryPolicy{Jitter: -1}})
	p.ProcessBatch(ctx)
	mu.Lock()
	log := buf.String()
	mu.Unlock()
	for _, want := range []string{
		`msg="event created"`, `msg="batch claimed"`, `events=3`, `msg="processing event"`,
		`msg="event delivered"`, `msg="delivery failed, will retry"`, `retry_delay=1s`, `msg="event given up: permanent error"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(log)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCancellingStartsContextStopsTheProcessor(t *testing.T) {
	store := sqlitetest.NewStore(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h, got := delivered()
	p := newProcessor(t, store, h, outbox.Config{PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	// Once the run has wound down, the processor can be started again.
	deadline := time.Now().Add(time.Minute)
	for p.Start(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the processor still counts as running a minute after its context was cancelled")
		}
		time.Sleep(time.Millisecond)
	}
	e := enqueue(t, store, time.Now(), 1)[0]
	if d := waitFor(t, got); d.ID != e.ID {
		t.Fatalf("delivered %s", d.ID)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Concurrent Stops do not panic.
	p.Start(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { p.Stop(context.Background()) })
	}
	wg.Wait()
}

func TestTheNextEventOfAKeyDoesNotWaitForThePoll(t *testing.T) {
	store := sqlitetest.NewStore(t)
	h, got := delivered()
	p := newProcessor(t, store, h, outbox.Config{PollInterval: time.Hour})
	create, update := outbox.NewEvent("t", "entry", "u"), outbox.NewEvent("t", "entry", "u")
	create.OrderingKey, update.OrderingKey = "entry", "entry"
	if err := store.Enqueue(context.Background(), time.Now(), create, update); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	// With an hour between polls, the update arrives only if completing the create
	// led straight to another cycle.
	if first, second := waitFor(t, got), waitFor(t, got); first.ID != create.ID || second.ID != update.ID {
		t.Fatalf("delivered %s then %s, want the create then the update", first.EntityID, second.EntityID)
	}
}

func TestAnOlderRetryGoesBeforeANewerEvent(t *testing.T) {
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(t0)
	var order []string
	fails := 1
	h := outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		order = append(order, e.EntityID)
		if e.EntityID == "old" && fails > 0 {
			fails--
			return errors.New("503")
		}
		return nil
	})
	p := newProcessor(t, store, h, outbox.Config{Clock: clock, BatchSize: 1, Retry: outbox.RetryPolicy{Jitter: -1}})
	old := outbox.NewEvent("t", "old", "u")
	if err := store.Enqueue(context.Background(), t0, old); err != nil {
		t.Fatal(err)
	}
	p.ProcessBatch(context.Background()) // old fails, due again at +1s
	if err := store.Enqueue(context.Background(), t0, outbox.NewEvent("t", "new", "u")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	p.ProcessBatch(context.Background())
	p.ProcessBatch(context.Background())
	if strings.Join(order, ",") != "old,old,new" {
		t.Fatalf("delivery order %v: the due retry of the older event should go first", order)
	}
}

// With BatchesInFlight 2 a running processor works on two batches at once: here two
// batches of one event each, whose deliveries can only finish together.
func TestBatchesInFlightOverlap(t *testing.T) {
	store := sqlitetest.NewStore(t)
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
		case <-time.After(time.Minute):
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

// With a 1 s retry delay and a 2 s poll interval, the second attempt comes when the
// retry falls due, not at the next poll: the idle processor sleeps until the earlier of
// the two. (Real time: the measured gap is logged; the assertion is only that it comes
// after the delay and before the poll would have fired.)
func TestRetryWakesTheProcessorBeforeThePoll(t *testing.T) {
	store := sqlitetest.NewStore(t)
	var (
		mu sync.Mutex
		at []time.Time
	)
	done := make(chan struct{})
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		if len(at) == 1 {
			return errors.New("first attempt fails")
		}
		if len(at) == 2 {
			close(done)
		}
		return nil
	})
	const delay, poll = time.Second, 2 * time.Second
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		PollInterval: poll, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{delay}, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	if err := store.Enqueue(ctx, time.Now(), outbox.NewEvent("t", "e", "u")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("no second attempt within a minute")
	}
	mu.Lock()
	gap := at[1].Sub(at[0])
	mu.Unlock()
	t.Logf("gap between attempts 1 and 2: %s (retry delay %s, poll interval %s)", gap, delay, poll)
	if gap < delay || gap >= poll {
		t.Fatalf("second attempt %s after the first; want at its %s delay, before the %s poll", gap, delay, poll)
	}
}

// The breaker with an injected clock: it opens after Threshold unavailable failures,
// claims nothing during its cooldown, probes with one event, doubles the cooldown after
// a failed probe, and closes when the destination answers, even with an error of the
// event's own (which then counts as an attempt).
func TestBreakerOpensProbesAndCloses(t *testing.T) {
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(t0)
	var calls atomic.Int64
	type reply struct{ err error }
	var answer atomic.Value // the destination's reply
	answer.Store(reply{outbox.Unavailable(errors.New("connection refused"))})
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		calls.Add(1)
		return answer.Load().(reply).err
	})
	p, err := outbox.NewProcessor(store, h, outbox.Config{Clock: clock, MaxConcurrent: 1, Logger: outboxtest.Discard,
		Breaker: outbox.BreakerConfig{Threshold: 3, Cooldown: time.Second, MaxCooldown: 4 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	var evs []*outbox.Event
	for i := range 10 {
		evs = append(evs, outbox.NewEvent("t", fmt.Sprint("e", i), "u"))
	}
	ctx := context.Background()
	if err := store.Enqueue(ctx, t0, evs...); err != nil {
		t.Fatal(err)
	}
	step := func(want int64, what string) {
		t.Helper()
		before := calls.Load()
		if _, err := p.ProcessBatch(ctx); err != nil {
			t.Fatal(err)
		}
		if got := calls.Load() - before; got != want {
			t.Fatalf("%s: %d deliveries, want %d", what, got, want)
		}
	}
	step(3, "first batch: the circuit opens at the third unavailable failure; the rest are handed back")
	if b := p.Breaker(); !b.Open || !b.NextProbe.Equal(t0.Add(time.Second)) {
		t.Fatalf("breaker %+v, want open with a probe at +1s", b)
	}
	clock.Advance(999 * time.Millisecond)
	step(0, "during the cooldown")
	clock.Advance(time.Millisecond)
	step(1, "the probe")
	if b := p.Breaker(); !b.Open || !b.NextProbe.Equal(clock.Now().Add(2*time.Second)) {
		t.Fatalf("after a failed probe: %+v, want open with the cooldown doubled to 2s", b)
	}
	clock.Advance(2 * time.Second)
	step(1, "the second probe")
	clock.Advance(4 * time.Second)
	step(1, "the third probe (cooldown capped at 4s)")
	if st, _ := p.Stats(ctx); st.Failed+st.GivenUp != 0 {
		t.Fatalf("unavailable attempts were counted: %+v", st)
	}
	answer.Store(reply{errors.New("422: the event is malformed")})
	clock.Advance(4 * time.Second)
	step(1, "a probe the destination answers")
	if p.Breaker().Open {
		t.Fatal("the circuit stays open after the destination answered")
	}
	if st, _ := p.Stats(ctx); st.Failed != 1 {
		t.Fatalf("the answered probe's failure: %d retrying, want 1 (it is the event's, and counts)", st.Failed)
	}
}
