package outboxtest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/fitiq/outbox"
)

// A row whose metadata is JSON but not an object of strings (written by SQL, as
// docs/any-language.md lets any language write events) fails no read: Get, List and
// Claim return its event with no metadata and the reason in Unusable. A processor
// gives it up with that reason without calling its handler, and delivers the events
// around it; mended and retried, it is delivered.
func testUnusableMetadataIsGivenUp(t *testing.T, h Harness) {
	if h.SetMetadataJSON == nil {
		t.Skip("the harness has no SetMetadataJSON: rows written by SQL are not tested")
	}
	ctx := context.Background()
	a, bad, c := event("t", "a", "u"), event("t", "bad", "u"), event("t", "c", "u")
	mustEnqueue(t, h.Store, T0, a, bad, c)
	if err := h.SetMetadataJSON(ctx, bad.ID, `{"count": 1}`); err != nil {
		t.Fatalf("SetMetadataJSON: %v", err)
	}
	const reason = `metadata is not a JSON object of strings: the value of "count" is a number: 1`
	got := get(t, h.Store, bad.ID)
	if got.Metadata != nil || got.Unusable != reason || got.EntityID != "bad" {
		t.Fatalf("Get: metadata %v, unusable %q; want none, and %q", got.Metadata, got.Unusable, reason)
	}
	if evs := list(t, h.Store, outbox.Filter{}); len(evs) != 3 || evs[1].Unusable != reason || evs[0].Unusable != "" {
		t.Fatalf("List: %d events, want 3 with the second unusable", len(evs))
	}

	var mu sync.Mutex
	handled := map[string]int{}
	p := newProcessor(t, h.Store, outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		handled[e.EntityID]++
		return nil
	}), outbox.Config{Clock: NewClock(T0)})
	if n := processBatch(t, p); n != 3 {
		t.Fatalf("claimed %d, want 3", n)
	}
	if handled["a"] != 1 || handled["c"] != 1 || handled["bad"] != 0 {
		t.Fatalf("handled %v, want a and c once, bad never", handled)
	}
	got = get(t, h.Store, bad.ID)
	if !got.GivenUp() || !strings.Contains(got.LastError, "unusable row: "+reason) || len(got.Errors) != 1 {
		t.Fatalf("bad: status %s, given up %v, last error %q, %d errors; want it given up with the reason",
			got.Status, got.GivenUp(), got.LastError, len(got.Errors))
	}

	if err := h.SetMetadataJSON(ctx, bad.ID, `{"count": "1"}`); err != nil {
		t.Fatalf("SetMetadataJSON: %v", err)
	}
	if n, err := h.Store.Retry(ctx, T0, outbox.Filter{IDs: []string{bad.ID}}); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v; want 1", n, err)
	}
	if n := processBatch(t, p); n != 1 || handled["bad"] != 1 {
		t.Fatalf("after the row was mended: claimed %d, handled %v; want it delivered", n, handled)
	}
	if got := get(t, h.Store, bad.ID); got.Status != outbox.StatusCompleted || got.Metadata["count"] != "1" || got.Unusable != "" {
		t.Fatalf("mended: %+v", got)
	}
}
