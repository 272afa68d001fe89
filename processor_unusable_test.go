package outbox_test

import (
	"context"
	"slices"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// unusableStore marks the claimed events of one entity unusable, as a store does with a
// row written by SQL that it cannot read in full.
type unusableStore struct {
	outbox.Store
	entity string
}

func (s unusableStore) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	events, err := s.Store.Claim(ctx, p)
	for i := range events {
		if events[i].EntityID == s.entity {
			events[i].Unusable = "metadata is not a JSON object of strings: it is an array: [1]"
		}
	}
	return events, err
}

// An unusable event is given up at its claim with the store's reason, never handed to
// the handler (one by one or in a batch), and the breaker hears nothing of it; the events around it are delivered.
func TestUnusableEventIsGivenUpWithoutCallingTheHandler(t *testing.T) {
	for _, batch := range []bool{false, true} {
		name := "handler"
		if batch {
			name = "batch handler"
		}
		t.Run(name, func(t *testing.T) {
			store := unusableStore{Store: sqlitetest.NewStore(t), entity: "broken"}
			var events []*outbox.Event
			for _, id := range []string{"a", "broken", "c"} {
				events = append(events, outbox.NewEvent("t", id, "u"))
			}
			if err := store.Enqueue(context.Background(), t0, events...); err != nil {
				t.Fatal(err)
			}
			sink := &batchSink{}
			var h outbox.Handler = sink
			if !batch {
				h = outbox.HandlerFunc(sink.Handle)
			}
			p := newProcessor(t, store, h, outbox.Config{Clock: outboxtest.NewClock(t0), MaxConcurrent: 1}) // batchSink is not safe for concurrent use
			if n, err := p.ProcessBatch(context.Background()); n != 3 || err != nil {
				t.Fatalf("ProcessBatch = %d, %v", n, err)
			}
			var handled []string
			for _, b := range sink.batches {
				handled = append(handled, b...)
			}
			if slices.Sort(handled); !slices.Equal(handled, []string{"a", "c"}) {
				t.Fatalf("handled %v, want a and c", handled)
			}
			got := mustGet(t, store, events[1].ID)
			if !got.GivenUp() || got.LastError != "permanent: unusable row: metadata is not a JSON object of strings: it is an array: [1]" {
				t.Fatalf("given up %v, last error %q", got.GivenUp(), got.LastError)
			}
			for _, e := range []*outbox.Event{events[0], events[2]} {
				if got := mustGet(t, store, e.ID); got.Status != outbox.StatusCompleted {
					t.Errorf("%s: %s, want completed", e.EntityID, got.Status)
				}
			}
			if st := p.Breaker(); st.Open || st.Unavailable != 0 || st.Reason != "" {
				t.Errorf("breaker %+v, want it closed and untouched", st)
			}
		})
	}
}
