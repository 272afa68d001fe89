package outboxtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// testTimeline: completions and failures land in the minute they were recorded, the
// window's bounds are honoured, and a failure later made good is not counted.
func testTimeline(t *testing.T, h Harness) {
	tl, ok := h.Store.(outbox.Timeline)
	if !ok {
		t.Skip("the store does not implement outbox.Timeline (optional)")
	}
	m0 := T0.Truncate(time.Minute)
	ok1, ok2, retrying, gaveUp, fixed, early := event("t", "ok1", "u"), event("t", "ok2", "u"),
		event("t", "retrying", "u"), event("t", "gave-up", "u"), event("t", "fixed", "u"), event("t", "early", "u")
	mustEnqueue(t, h.Store, m0.Add(-time.Hour), early)
	claim(t, h.Store, "a", m0.Add(-time.Hour), 10)
	settle(t, h.Store, "a", m0.Add(-time.Hour), outbox.Outcome{ID: early.ID, Result: outbox.Delivered})

	mustEnqueue(t, h.Store, m0, ok1, ok2, retrying, gaveUp, fixed)
	claim(t, h.Store, "a", m0.Add(10*time.Second), 10)
	settle(t, h.Store, "a", m0.Add(20*time.Second),
		outbox.Outcome{ID: ok1.ID, Result: outbox.Delivered},
		outbox.Outcome{ID: retrying.ID, Result: outbox.Failed, Error: "503", NextAttemptAt: m0.Add(time.Hour)},
		outbox.Outcome{ID: gaveUp.ID, Result: outbox.Failed, Error: "400"},
		outbox.Outcome{ID: fixed.ID, Result: outbox.Failed, Error: "503", NextAttemptAt: m0.Add(time.Minute)},
	)
	settle(t, h.Store, "a", m0.Add(2*time.Minute+5*time.Second), outbox.Outcome{ID: ok2.ID, Result: outbox.Delivered})
	claim(t, h.Store, "b", m0.Add(2*time.Minute+10*time.Second), 10) // fixed is due again
	settle(t, h.Store, "b", m0.Add(2*time.Minute+15*time.Second), outbox.Outcome{ID: fixed.ID, Result: outbox.Delivered})

	got, err := tl.Timeline(context.Background(), outbox.TimelineQuery{Since: m0, Until: m0.Add(5 * time.Minute)})
	if err != nil {
		t.Fatalf("Timeline: %v", err)
	}
	want := []outbox.TimelineBucket{
		{Minute: m0, Completed: 1, Failed: 2, GivenUp: 1},
		{Minute: m0.Add(2 * time.Minute), Completed: 2},
	}
	if !timelineEqual(got, want) {
		t.Fatalf("Timeline = %+v, want %+v", got, want)
	}
	// Completions only from CompletedSince on; failures over the whole window.
	got, err = tl.Timeline(context.Background(), outbox.TimelineQuery{Since: m0, Until: m0.Add(5 * time.Minute), CompletedSince: m0.Add(time.Minute)})
	if err != nil {
		t.Fatalf("Timeline: %v", err)
	}
	want = []outbox.TimelineBucket{
		{Minute: m0, Failed: 2, GivenUp: 1},
		{Minute: m0.Add(2 * time.Minute), Completed: 2},
	}
	if !timelineEqual(got, want) {
		t.Fatalf("Timeline with CompletedSince = %+v, want %+v", got, want)
	}
	if got, err := tl.Timeline(context.Background(), outbox.TimelineQuery{Since: m0.Add(time.Minute), Until: m0.Add(2 * time.Minute)}); err != nil || len(got) != 0 {
		t.Fatalf("Timeline of an empty minute = %+v, %v; want nothing", got, err)
	}
	if _, err := tl.Timeline(context.Background(), outbox.TimelineQuery{Since: m0, Until: m0.Add(-time.Minute)}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("Timeline with Until before Since: err = %v, want ErrInvalid", err)
	}
}

func timelineEqual(a, b []outbox.TimelineBucket) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Minute.Equal(b[i].Minute) || a[i].Completed != b[i].Completed || a[i].Failed != b[i].Failed || a[i].GivenUp != b[i].GivenUp {
			return false
		}
	}
	return true
}

// testKeyHead: the head of a key is its earliest unfinished event, and a key whose
// events are all completed has none.
func testKeyHead(t *testing.T, h Harness) {
	ki, ok := h.Store.(outbox.KeyInspector)
	if !ok {
		t.Skip("the store does not implement outbox.KeyInspector (optional)")
	}
	first, second, third, other := event("t", "1", "u"), event("t", "2", "u"), event("t", "3", "u"), event("t", "other", "u")
	first.OrderingKey, second.OrderingKey, third.OrderingKey, other.OrderingKey = "k", "k", "k", "k2"
	mustEnqueue(t, h.Store, T0, first, second, third, other)
	ctx := context.Background()
	head, err := ki.KeyHead(ctx, "k")
	if err != nil || head.ID != first.ID {
		t.Fatalf("KeyHead(k) = %s, %v; want the first event %s", head.EntityID, err, first.ID)
	}
	claim(t, h.Store, "a", T0, 10)
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: first.ID, Result: outbox.Delivered}, outbox.Outcome{ID: other.ID, Result: outbox.Delivered})
	if head, err := ki.KeyHead(ctx, "k"); err != nil || head.ID != second.ID {
		t.Fatalf("after the first completed, KeyHead(k) = %s, %v; want the second", head.EntityID, err)
	}
	if _, err := ki.KeyHead(ctx, "k2"); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("KeyHead of a finished key: err = %v, want ErrNotFound", err)
	}
	if _, err := ki.KeyHead(ctx, "no-such-key"); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("KeyHead of an unknown key: err = %v, want ErrNotFound", err)
	}
}
