package outboxtest

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/fitiq/outbox"
)

// hookKey marks the contexts of this test, so that the process-wide hook it installs
// leaves the events of other tests, which may run in parallel, alone.
type hookKey struct{}

// Every enqueue path runs the installed EnqueueHook once per event, with the caller's
// context, before the event is written: what the hook adds to Metadata is stored.
func testEnqueueRunsHook(t *testing.T, h Harness) {
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	prev := outbox.SetEnqueueHook(func(ctx context.Context, e outbox.Event) map[string]string {
		mark, ok := ctx.Value(hookKey{}).(string)
		if !ok {
			return nil
		}
		mu.Lock()
		seen[e.EntityID]++
		mu.Unlock()
		md := maps.Clone(e.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		md[outbox.MetadataTraceparent] = mark
		return md
	})
	t.Cleanup(func() { outbox.SetEnqueueHook(prev) })

	ctx := context.WithValue(context.Background(), hookKey{}, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	shared := map[string]string{"source": "test"}
	a, b := event("order.created", "own-tx-a", "u"), event("order.created", "own-tx-b", "u")
	a.Metadata, b.Metadata = shared, shared
	if err := h.Store.Enqueue(ctx, T0, a, b); err != nil {
		t.Fatal(err)
	}
	c := event("order.created", "callers-tx", "u")
	if err := h.EnqueueInTx(ctx, true, c); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*outbox.Event{a, b, c} {
		got := get(t, h.Store, e.ID)
		if got.Metadata[outbox.MetadataTraceparent] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
			t.Errorf("event %s stored metadata %v: the hook's traceparent is missing", e.EntityID, got.Metadata)
		}
		if e.EntityID != "callers-tx" && got.Metadata["source"] != "test" {
			t.Errorf("event %s lost the caller's metadata: %v", e.EntityID, got.Metadata)
		}
		if seen[e.EntityID] != 1 {
			t.Errorf("the hook ran %d times for %s, want once", seen[e.EntityID], e.EntityID)
		}
	}
	if len(shared) != 1 {
		t.Errorf("the caller's map was changed: %v", shared)
	}
}
