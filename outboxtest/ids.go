package outboxtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// testOtherSpellingsOfID: every spelling of a UUID that outbox.CanonicalID accepts
// finds the same event, on every operation that takes IDs, and an event enqueued with
// an upper-case ID is stored (and returned) in the canonical spelling.
func testOtherSpellingsOfID(t *testing.T, h Harness) {
	ctx := context.Background()
	e := event("t", "e", "u")
	e.ID = "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"
	mustEnqueue(t, h.Store, T0, e)
	canonical := strings.ToLower(e.ID)
	if e.ID != canonical {
		t.Fatalf("enqueued ID = %q, want the canonical %q", e.ID, canonical)
	}
	spellings := []string{
		strings.ToUpper(canonical),
		"{" + canonical + "}",
		"urn:uuid:" + canonical,
		strings.ReplaceAll(canonical, "-", ""),
	}
	for _, id := range spellings {
		got, err := h.Store.Get(ctx, id)
		if err != nil || got.ID != canonical {
			t.Fatalf("Get(%q) = %q, %v; want the event %s", id, got.ID, err, canonical)
		}
		if evs := list(t, h.Store, outbox.Filter{IDs: []string{id}}); len(evs) != 1 {
			t.Fatalf("List(IDs %q) found %d events, want 1", id, len(evs))
		}
	}
	claimed := claim(t, h.Store, "o", T0, 1)
	if len(claimed) != 1 {
		t.Fatalf("claimed %d, want 1", len(claimed))
	}
	lost, err := h.Store.ExtendLease(ctx, "o", []string{spellings[0]}, T0.Add(time.Minute))
	if err != nil || len(lost) != 0 {
		t.Fatalf("ExtendLease(upper case) lost %v, %v; want none lost", lost, err)
	}
	settle(t, h.Store, "o", T0, outbox.Outcome{ID: spellings[1], Result: outbox.Failed, Error: "x"})
	if got := get(t, h.Store, canonical); got.Status != outbox.StatusFailed {
		t.Fatalf("after Settle with braces: status %s, want failed", got.Status)
	}
	n, err := h.Store.Retry(ctx, T0, outbox.Filter{IDs: []string{spellings[2]}})
	if err != nil || n != 1 {
		t.Fatalf("Retry(urn:uuid:) = %d, %v; want 1", n, err)
	}
	if n, err := h.Store.Retry(ctx, T0, outbox.Filter{IDs: []string{"not-a-uuid"}}); err != nil || n != 0 {
		t.Fatalf("Retry(not a UUID) = %d, %v; want 0 and no error", n, err)
	}
	n, err = h.Store.Delete(ctx, spellings[3])
	if err != nil || n != 1 {
		t.Fatalf("Delete(no hyphens) = %d, %v; want 1", n, err)
	}
}
