package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// The default backoff: the delay after the 1st, 2nd, … failed attempt, the last one
// repeating. The fifth failure gives the event up.
func ExampleRetryPolicy() {
	var p outbox.RetryPolicy // zero fields take the defaults
	for attempts := 1; attempts <= 6; attempts++ {
		fmt.Printf("after failure %d: wait %s\n", attempts, p.Delay(attempts))
	}
	fmt.Println("attempts before giving up:", outbox.DefaultMaxAttempts)
	// Output:
	// after failure 1: wait 1s
	// after failure 2: wait 5s
	// after failure 3: wait 30s
	// after failure 4: wait 2m0s
	// after failure 5: wait 10m0s
	// after failure 6: wait 10m0s
	// attempts before giving up: 5
}

// NextAttemptAt adds the delay, spread by the jitter (±10 % by default) so that events
// failed together do not return together. A negative Jitter makes it exact.
func ExampleRetryPolicy_NextAttemptAt() {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := outbox.RetryPolicy{Delays: []time.Duration{time.Second, time.Minute}, Jitter: -1}
	fmt.Println(p.NextAttemptAt(now, 1).Format(time.TimeOnly))
	fmt.Println(p.NextAttemptAt(now, 2).Format(time.TimeOnly))
	fmt.Println(p.NextAttemptAt(now, 9).Format(time.TimeOnly))
	// Output:
	// 03:04:06
	// 03:05:05
	// 03:05:05
}

// A handler's error decides what happens next: nil completes the event, a plain error
// is retried after the backoff, RetryAfter asks for at least its delay (a server's
// Retry-After), and Permanent gives the event up at once, keeping it for an operator.
func ExampleRetryAfter() {
	store, done := openExample()
	defer done()
	ctx := context.Background()
	clock := outboxtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

	var events []*outbox.Event
	for _, id := range []string{"ok", "unavailable", "throttled", "rejected"} {
		events = append(events, outbox.NewEvent("order.created", id, "user-1"))
	}
	if err := store.Enqueue(ctx, clock.Now(), events...); err != nil {
		log.Fatal(err)
	}
	deliver := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		switch e.EntityID {
		case "unavailable":
			return errors.New("503 Service Unavailable")
		case "throttled":
			return outbox.RetryAfter(errors.New("429 Too Many Requests"), 90*time.Second)
		case "rejected":
			return outbox.Permanent(errors.New("400 Bad Request"))
		}
		return nil
	})
	p, err := outbox.NewProcessor(store, deliver, outbox.Config{
		Clock: clock, Retry: outbox.RetryPolicy{Jitter: -1}, Logger: outboxtest.Discard})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.ProcessBatch(ctx); err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		e, err := store.Get(ctx, ev.ID)
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case e.Status == outbox.StatusCompleted:
			fmt.Printf("%s: completed\n", e.EntityID)
		case e.GivenUp():
			fmt.Printf("%s: given up (%s)\n", e.EntityID, e.LastError)
		default:
			fmt.Printf("%s: retry in %s\n", e.EntityID, e.NextAttemptAt.Sub(clock.Now()))
		}
	}
	// Output:
	// ok: completed
	// unavailable: retry in 1s
	// throttled: retry in 1m30s
	// rejected: given up (permanent: 400 Bad Request)
}

// Handlers routes by event type. A type with no handler fails permanently: the event
// is given up, visible, and can be retried once a handler exists.
func ExampleHandlers() {
	hs := outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error { return nil }),
	}
	ctx := context.Background()
	fmt.Println(hs.Handle(ctx, outbox.Event{Type: "order.created"}))
	err := hs.Handle(ctx, outbox.Event{Type: "order.shipped"})
	fmt.Println(errors.Is(err, outbox.ErrNoHandler), outbox.IsPermanent(err))
	// Output:
	// <nil>
	// true true
}
