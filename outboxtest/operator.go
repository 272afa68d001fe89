package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/google/uuid"
)

func testDeleteCompleted(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for i := range 5 {
		evs = append(evs, event("t", fmt.Sprintf("e%d", i), "u"))
	}
	mustEnqueue(t, h.Store, T0, evs...)
	claim(t, h.Store, "a", T0, 10)
	// e0..e2 complete at T0+i hours; e3 fails (kept however old); e4 stays processing.
	for i := range 3 {
		settle(t, h.Store, "a", T0.Add(time.Duration(i)*time.Hour), outbox.Outcome{ID: evs[i].ID, Result: outbox.Delivered})
	}
	settle(t, h.Store, "a", T0, outbox.Outcome{ID: evs[3].ID, Result: outbox.Failed, Error: "x"})

	ctx := context.Background()
	n, err := h.Store.DeleteCompleted(ctx, T0.Add(90*time.Minute), 1)
	if err != nil || n != 1 {
		t.Fatalf("DeleteCompleted(limit 1) = %d, %v; want 1", n, err)
	}
	n, err = h.Store.DeleteCompleted(ctx, T0.Add(90*time.Minute), 100)
	if err != nil || n != 1 {
		t.Fatalf("DeleteCompleted = %d, %v; want the one remaining before the cut", n, err)
	}
	left := entityIDs(list(t, h.Store, outbox.Filter{}))
	if !slices.Equal(left, []string{"e2", "e3", "e4"}) {
		t.Fatalf("left %v, want e2 (completed after the cut), e3 (failed), e4 (processing)", left)
	}
}

func testUpdate(t *testing.T, h Harness) {
	// A failed event, reset for retry, is pending and can retry.
	e := event("t", "e", "u")
	mustEnqueue(t, h.Store, T0, e)
	claim(t, h.Store, "o", T0, 1)
	settle(t, h.Store, "o", T0, outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "x"})
	ev := get(t, h.Store, e.ID)
	ev.ResetForRetry(T0.Add(time.Minute))
	ev.Priority = 3
	ev.Metadata = map[string]string{"retried_by": "test"}
	if err := h.Store.Update(context.Background(), T0.Add(time.Minute), &ev); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got := get(t, h.Store, e.ID)
	if got.Status != outbox.StatusPending || got.Attempts != 0 || got.Priority != 3 ||
		got.Metadata["retried_by"] != "test" || len(got.Errors) != 1 {
		t.Fatalf("after Update: %+v", got)
	}
	claim(t, h.Store, "o", T0.Add(time.Minute), 1)
	held := get(t, h.Store, e.ID)
	held.ResetForRetry(T0.Add(time.Minute))
	if err := h.Store.Update(context.Background(), T0.Add(time.Minute), &held); !errors.Is(err, outbox.ErrLeased) {
		t.Fatalf("Update of a leased event: %v, want ErrLeased", err)
	}
	missing := outbox.Event{ID: uuid.NewString(), Status: outbox.StatusPending}
	if err := h.Store.Update(context.Background(), T0, &missing); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Update of a missing event: %v, want ErrNotFound", err)
	}
}

func testRetry(t *testing.T, h Harness) {
	gu1, gu2, retrying, done, pending := event("a", "gu1", "u"), event("b", "gu2", "u"), event("a", "retrying", "u"), event("a", "done", "u"), event("a", "pending", "u")
	mustEnqueue(t, h.Store, T0, gu1, gu2, retrying, done)
	claim(t, h.Store, "o", T0, 10)
	settle(t, h.Store, "o", T0,
		outbox.Outcome{ID: gu1.ID, Result: outbox.Failed, Error: "x"},
		outbox.Outcome{ID: gu2.ID, Result: outbox.Failed, Error: "x"},
		outbox.Outcome{ID: retrying.ID, Result: outbox.Failed, Error: "x", NextAttemptAt: T0.Add(time.Hour)},
		outbox.Outcome{ID: done.ID, Result: outbox.Delivered},
	)
	mustEnqueue(t, h.Store, T0, pending)
	ctx := context.Background()
	n, err := h.Store.Retry(ctx, T0.Add(time.Second), outbox.Filter{GivenUp: true, Type: "a"})
	if err != nil || n != 1 {
		t.Fatalf("Retry(given up, type a) = %d, %v; want 1", n, err)
	}
	if g := get(t, h.Store, gu1.ID); g.Status != outbox.StatusPending || g.Attempts != 0 || len(g.Errors) != 1 {
		t.Fatalf("retried event: status %q attempts %d errors %d; want pending, 0, history kept", g.Status, g.Attempts, len(g.Errors))
	}
	n, err = h.Store.Retry(ctx, T0.Add(time.Second), outbox.Filter{})
	if err != nil || n != 2 {
		t.Fatalf("Retry(all failed) = %d, %v; want 2 (gu2 and retrying)", n, err)
	}
	if d := get(t, h.Store, done.ID); d.Status != outbox.StatusCompleted {
		t.Fatalf("Retry touched a completed event: %q", d.Status)
	}
	claim(t, h.Store, "o", T0.Add(2*time.Second), 10)
	n, err = h.Store.Retry(ctx, T0.Add(2*time.Second), outbox.Filter{Status: outbox.StatusProcessing})
	if err != nil || n != 0 {
		t.Fatalf("Retry of leased events = %d, %v; want 0", n, err)
	}
}

func testDelete(t *testing.T, h Harness) {
	a, b := event("t", "a", "u"), event("t", "b", "u")
	mustEnqueue(t, h.Store, T0, a, b)
	n, err := h.Store.Delete(context.Background(), a.ID, uuid.NewString())
	if err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1", n, err)
	}
	if left := entityIDs(list(t, h.Store, outbox.Filter{})); !slices.Equal(left, []string{"b"}) {
		t.Fatalf("left %v", left)
	}
}

func testList(t *testing.T, h Harness) {
	var evs []*outbox.Event
	for i := range 7 {
		typ := "a"
		if i%2 == 1 {
			typ = "b"
		}
		evs = append(evs, event(typ, fmt.Sprintf("e%d", i), []string{"x", "y"}[i%3/2]))
	}
	mustEnqueue(t, h.Store, T0, evs...)
	claim(t, h.Store, "o", T0, 2) // e0, e1 processing
	tests := []struct {
		name string
		f    outbox.Filter
		want []string
	}{
		{"all", outbox.Filter{}, []string{"e0", "e1", "e2", "e3", "e4", "e5", "e6"}},
		{"status", outbox.Filter{Status: outbox.StatusProcessing}, []string{"e0", "e1"}},
		{"type", outbox.Filter{Type: "b"}, []string{"e1", "e3", "e5"}},
		{"user", outbox.Filter{UserID: "y"}, []string{"e2", "e5"}},
		{"ids", outbox.Filter{IDs: []string{evs[4].ID, evs[6].ID}}, []string{"e4", "e6"}},
		{"limit", outbox.Filter{Limit: 3}, []string{"e0", "e1", "e2"}},
		{"page", outbox.Filter{AfterSeq: evs[2].Seq, Limit: 3}, []string{"e3", "e4", "e5"}},
		{"combined", outbox.Filter{Status: outbox.StatusPending, Type: "a", UserID: "x"}, []string{"e4", "e6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := entityIDs(list(t, h.Store, tc.f)); !slices.Equal(got, tc.want) {
				t.Fatalf("List(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
	if _, err := h.Store.List(context.Background(), outbox.Filter{Status: "done"}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("List with an unknown status: %v, want ErrInvalid", err)
	}
}
