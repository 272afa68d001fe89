package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/fitiq/outbox"
)

func TestShadowRecordsDifferencesAndCompletesEveryEvent(t *testing.T) {
	sent := map[string]bool{"e1": true, "e3": true} // what the existing path delivered
	sh := outbox.NewShadow(func(_ context.Context, e outbox.Event) error {
		if !sent[e.EntityID] {
			return fmt.Errorf("%s never reached the receiver", e.EntityID)
		}
		return nil
	})
	ctx := context.Background()
	for _, id := range []string{"e1", "e2", "e3"} {
		if err := sh.Handle(ctx, outbox.Event{ID: "ev-" + id, EntityID: id}); err != nil {
			t.Fatalf("Handle(%s) = %v: a shadow never fails an event", id, err)
		}
	}
	diffs := sh.Differences()
	if sh.Seen() != 3 || len(diffs) != 1 || diffs[0].Event.EntityID != "e2" {
		t.Fatalf("seen %d, differences %+v; want 3 and e2", sh.Seen(), diffs)
	}
}

func TestShadowRetriesWhenTheComparisonIsCutShort(t *testing.T) {
	sh := outbox.NewShadow(func(ctx context.Context, e outbox.Event) error {
		return fmt.Errorf("look up %s: %w", e.EntityID, context.DeadlineExceeded)
	})
	if err := sh.Handle(context.Background(), outbox.Event{EntityID: "e"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Handle = %v, want the deadline error (retried, not a difference)", err)
	}
	if sh.Seen() != 0 || len(sh.Differences()) != 0 {
		t.Fatalf("a cut-short comparison was counted: seen %d, differences %d", sh.Seen(), len(sh.Differences()))
	}
}
