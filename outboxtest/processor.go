package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// Discard is a logger for tests that do not read the log.
var Discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func newProcessor(t *testing.T, s outbox.Store, h outbox.Handler, cfg outbox.Config) *outbox.Processor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Discard
	}
	p, err := outbox.NewProcessor(s, h, cfg)
	if err != nil {
		t.Fatalf("NewProcessor: %v", err)
	}
	return p
}

func processBatch(t *testing.T, p *outbox.Processor) int {
	t.Helper()
	n, err := p.ProcessBatch(context.Background())
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	return n
}

func testProcessorBackoff(t *testing.T, h Harness) {
	clock := NewClock(T0)
	var attemptsAt []time.Time
	failing := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		attemptsAt = append(attemptsAt, clock.Now())
		return errors.New("network down")
	})
	p := newProcessor(t, h.Store, failing, outbox.Config{Clock: clock, Retry: outbox.RetryPolicy{Jitter: -1}})
	e := event("order.created", "entry", "u")
	mustEnqueue(t, h.Store, T0, e)

	if n := processBatch(t, p); n != 1 {
		t.Fatalf("first cycle claimed %d, want 1", n)
	}
	for i, delay := range []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute} {
		clock.Advance(delay - time.Millisecond)
		if n := processBatch(t, p); n != 0 {
			t.Fatalf("retry %d ran 1ms before its %s delay was over", i+1, delay)
		}
		clock.Advance(time.Millisecond)
		if n := processBatch(t, p); n != 1 {
			t.Fatalf("retry %d did not run after exactly %s", i+1, delay)
		}
	}
	want := []time.Time{T0, T0.Add(time.Second), T0.Add(6 * time.Second), T0.Add(36 * time.Second), T0.Add(156 * time.Second)}
	if !slices.EqualFunc(attemptsAt, want, time.Time.Equal) {
		t.Fatalf("attempts at %v, want %v", attemptsAt, want)
	}
	got := get(t, h.Store, e.ID)
	if !got.GivenUp() || got.Attempts != 5 || got.LastError != "network down" || len(got.Errors) != 5 {
		t.Fatalf("after 5 failures: status %q next %v attempts %d error %q history %d; want given up after 5 with the error kept",
			got.Status, got.NextAttemptAt, got.Attempts, got.LastError, len(got.Errors))
	}
	clock.Advance(24 * time.Hour)
	if n := processBatch(t, p); n != 0 {
		t.Fatalf("a given-up event was attempted again")
	}
}

func testProcessorPermanent(t *testing.T, h Harness) {
	calls := 0
	h400 := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		calls++
		return outbox.Permanent(errors.New("400 Bad Request: amount out of range"))
	})
	clock := NewClock(T0)
	p := newProcessor(t, h.Store, h400, outbox.Config{Clock: clock})
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	processBatch(t, p)
	clock.Advance(time.Hour)
	processBatch(t, p)
	got := get(t, h.Store, e.ID)
	if calls != 1 || !got.GivenUp() || got.Attempts != 1 {
		t.Fatalf("permanent error: %d calls, given up %v, attempts %d; want 1 call, given up at once", calls, got.GivenUp(), got.Attempts)
	}
}

func testProcessorOrdering(t *testing.T, h Harness) {
	clock := NewClock(T0)
	var (
		mu                sync.Mutex
		order             []string
		failuresLeft      = 2
		inFlight, maxSeen int
	)
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		order = append(order, e.EntityID)
		inFlight++
		maxSeen = max(maxSeen, inFlight)
		fail := e.EntityID == "create" && failuresLeft > 0
		if fail {
			failuresLeft--
		}
		mu.Unlock()
		time.Sleep(time.Millisecond) // let deliveries overlap, so that concurrency is real
		mu.Lock()
		inFlight--
		mu.Unlock()
		if fail {
			return errors.New("503")
		}
		return nil
	})
	p := newProcessor(t, h.Store, handler, outbox.Config{Clock: clock, MaxConcurrent: 3, Retry: outbox.RetryPolicy{Jitter: -1}})
	var evs []*outbox.Event
	for _, name := range []string{"create", "update-1", "update-2"} {
		e := event("order.created", name, "u")
		e.OrderingKey = "entry-42"
		evs = append(evs, e)
	}
	for i := range 3 {
		e := event("order.created", fmt.Sprintf("other-%d", i), "u")
		e.OrderingKey = fmt.Sprintf("entry-%d", i)
		evs = append(evs, e)
	}
	mustEnqueue(t, h.Store, T0, evs...)

	if n := processBatch(t, p); n != 4 {
		t.Fatalf("first batch claimed %d, want 4: the head of entry-42 and the three other keys", n)
	}
	mu.Lock()
	first := slices.Clone(order)
	mu.Unlock()
	slices.Sort(first)
	if !slices.Equal(first, []string{"create", "other-0", "other-1", "other-2"}) {
		t.Fatalf("first batch delivered %v; other keys must not wait behind entry-42", first)
	}
	for range 10 {
		clock.Advance(time.Hour)
		processBatch(t, p)
	}
	var keyed []string
	for _, id := range order {
		if !slices.Contains([]string{"other-0", "other-1", "other-2"}, id) {
			keyed = append(keyed, id)
		}
	}
	want := []string{"create", "create", "create", "update-1", "update-2"}
	if !slices.Equal(keyed, want) {
		t.Fatalf("entry-42 delivered as %v, want %v", keyed, want)
	}
	if maxSeen > 3 {
		t.Fatalf("%d deliveries ran at once, over MaxConcurrent 3", maxSeen)
	}
	for _, e := range evs {
		if got := get(t, h.Store, e.ID); got.Status != outbox.StatusCompleted {
			t.Fatalf("%s ended %q", e.EntityID, got.Status)
		}
	}
}

func testProcessorHealth(t *testing.T, h Harness) {
	clock := NewClock(T0)
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		if e.Type == "bad" {
			return outbox.Permanent(errors.New("rejected"))
		}
		return nil
	})
	p := newProcessor(t, h.Store, handler, outbox.Config{Clock: clock})
	health := func() outbox.Health {
		t.Helper()
		hl, err := p.Health(context.Background())
		if err != nil {
			t.Fatalf("Health: %v", err)
		}
		return hl
	}
	if hl := health(); !hl.Healthy || len(hl.Alerts) != 0 {
		t.Fatalf("an empty outbox is unhealthy: %+v", hl.Alerts)
	}
	mustEnqueue(t, h.Store, T0, event("good", "g", "u"), event("bad", "b", "u"))
	processBatch(t, p) // 1 completed, 1 given up: failure rate 50%
	var many []*outbox.Event
	for i := range 51 {
		many = append(many, event("good", fmt.Sprintf("p%d", i), "u"))
	}
	mustEnqueue(t, h.Store, T0, many...)
	clock.Advance(6 * time.Minute) // the 51 pending ones are now stale

	hl := health()
	var rules []string
	for _, a := range hl.Alerts {
		rules = append(rules, a.Rule)
	}
	if hl.Healthy || !slices.Equal(rules, []string{"stale", "failure_rate", "given_up", "pending"}) {
		t.Fatalf("alerts %v (healthy %v), want stale, failure_rate, given_up and pending", rules, hl.Healthy)
	}
	stale, err := p.StaleEvents(context.Background(), 0)
	if err != nil || len(stale) != 51 {
		t.Fatalf("StaleEvents = %d events, %v; want 51", len(stale), err)
	}
}
