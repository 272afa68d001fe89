package outboxtest

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/fitiq/outbox"
)

// Every enqueue path runs the store's own EnqueueHook once per event, with the
// caller's context, before the event is written: what the hook adds to Metadata is
// stored. Two stores in one process (here on one database) run each its own hook, and
// a store without one runs none.
func testEnqueueRunsHook(t *testing.T, h Harness) {
	if h.WithEnqueueHook == nil {
		t.Skip("the harness has no WithEnqueueHook: the store's enqueue hook is not tested")
	}
	type ctxKey struct{}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	hook := func(mark string) outbox.EnqueueHook {
		return func(ctx context.Context, e outbox.Event) map[string]string {
			mu.Lock()
			seen[e.EntityID]++
			mu.Unlock()
			md := maps.Clone(e.Metadata)
			if md == nil {
				md = map[string]string{}
			}
			md[outbox.MetadataTraceparent] = mark
			md["from_ctx"], _ = ctx.Value(ctxKey{}).(string)
			return md
		}
	}
	const markA = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const markB = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ha, hb := h.WithEnqueueHook(hook(markA)), h.WithEnqueueHook(hook(markB))

	ctx := context.WithValue(context.Background(), ctxKey{}, "request-7")
	shared := map[string]string{"source": "test"}
	a1, a2 := event("order.created", "a-own-tx-1", "u"), event("order.created", "a-own-tx-2", "u")
	a1.Metadata, a2.Metadata = shared, shared
	if err := ha.Store.Enqueue(ctx, T0, a1, a2); err != nil {
		t.Fatal(err)
	}
	a3 := event("order.created", "a-callers-tx", "u")
	if err := ha.EnqueueInTx(ctx, true, a3); err != nil {
		t.Fatal(err)
	}
	b1 := event("order.created", "b-own-tx", "u")
	if err := hb.Store.Enqueue(ctx, T0, b1); err != nil {
		t.Fatal(err)
	}
	b2 := event("order.created", "b-callers-tx", "u")
	if err := hb.EnqueueInTx(ctx, true, b2); err != nil {
		t.Fatal(err)
	}
	none := event("order.created", "no-hook", "u")
	if err := h.Store.Enqueue(ctx, T0, none); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		e    *outbox.Event
		mark string
	}{{a1, markA}, {a2, markA}, {a3, markA}, {b1, markB}, {b2, markB}} {
		got := get(t, h.Store, c.e.ID)
		if got.Metadata[outbox.MetadataTraceparent] != c.mark || got.Metadata["from_ctx"] != "request-7" {
			t.Errorf("event %s stored metadata %v: want its own store's hook's traceparent %s, run with the caller's context", c.e.EntityID, got.Metadata, c.mark)
		}
		if c.e == a1 || c.e == a2 {
			if got.Metadata["source"] != "test" {
				t.Errorf("event %s lost the caller's metadata: %v", c.e.EntityID, got.Metadata)
			}
		}
		if seen[c.e.EntityID] != 1 {
			t.Errorf("the hook ran %d times for %s, want once", seen[c.e.EntityID], c.e.EntityID)
		}
	}
	if got := get(t, h.Store, none.ID); got.Metadata[outbox.MetadataTraceparent] != "" || seen[none.EntityID] != 0 {
		t.Errorf("the store without a hook ran one: metadata %v", got.Metadata)
	}
	if len(shared) != 1 {
		t.Errorf("the caller's map was changed: %v", shared)
	}
}
