package outboxtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/google/uuid"
)

func testEnqueueRoundTrip(t *testing.T, h Harness) {
	e := event("order.created", "entry-1", "user-1")
	e.Priority = 10
	e.IsNewRecord = true
	e.Metadata = map[string]string{"source": "manual_entry", "app_version": "1.0.0"}
	e.Payload = []byte(`{"amount":72.5}`)
	e.OrderingKey = "entry-1"
	e.MaxAttempts = 7
	now := T0.Add(123456789 * time.Nanosecond)
	mustEnqueue(t, h.Store, now, e)

	id, err := uuid.Parse(e.ID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("ID = %q: want a UUIDv7 (err %v)", e.ID, err)
	}
	if e.Seq <= 0 || e.Status != outbox.StatusPending || e.Attempts != 0 {
		t.Fatalf("after enqueue: seq %d status %q attempts %d; want seq > 0, pending, 0", e.Seq, e.Status, e.Attempts)
	}
	want := outbox.Timestamp(now)
	if !e.CreatedAt.Equal(want) || !e.NextAttemptAt.Equal(want) {
		t.Fatalf("CreatedAt %v NextAttemptAt %v, want both %v", e.CreatedAt, e.NextAttemptAt, want)
	}
	got := get(t, h.Store, e.ID)
	if d := diffJSON(*e, got); d != "" {
		t.Fatalf("Get returned a different event: %s", d)
	}
}

func testEnqueueRolledBack(t *testing.T, h Harness) {
	ctx := context.Background()
	rolledBack := event("order.created", "gone", "u")
	if err := h.EnqueueInTx(ctx, false, rolledBack); err != nil {
		t.Fatalf("EnqueueInTx(rollback): %v", err)
	}
	if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
		t.Fatalf("after rollback the store holds %d events, want 0", len(got))
	}
	if _, err := h.Store.Get(ctx, rolledBack.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Get of rolled-back event: %v, want ErrNotFound", err)
	}
	kept := event("order.created", "kept", "u")
	if err := h.EnqueueInTx(ctx, true, kept); err != nil {
		t.Fatalf("EnqueueInTx(commit): %v", err)
	}
	if got := list(t, h.Store, outbox.Filter{}); len(got) != 1 || got[0].ID != kept.ID {
		t.Fatalf("after commit the store holds %v, want [%s]", ids(got), kept.ID)
	}
}

func testEnqueueInvalid(t *testing.T, h Harness) {
	big := make([]byte, outbox.DefaultMaxPayloadBytes+1)
	for i := range big {
		big[i] = ' '
	}
	copy(big, `"x"`)
	tests := []struct {
		name  string
		event *outbox.Event
		field string
	}{
		{"empty type", event("", "e", "u"), "Type"},
		{"empty entity ID", event("t", "", "u"), "EntityID"},
		{"payload over the limit", &outbox.Event{Type: "t", EntityID: "e", Payload: big}, "Payload"},
		{"invalid JSON payload", &outbox.Event{Type: "t", EntityID: "e", Payload: []byte(`{"amount":`)}, "Payload"},
		{"unknown status", &outbox.Event{Type: "t", EntityID: "e", Status: "done"}, "Status"},
		{"negative max attempts", &outbox.Event{Type: "t", EntityID: "e", MaxAttempts: -1}, "MaxAttempts"},
		{"malformed ID", &outbox.Event{ID: "not-a-uuid", Type: "t", EntityID: "e"}, "ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := event("t", "good", "u")
			err := h.Store.Enqueue(context.Background(), T0, good, tc.event)
			var fe *outbox.FieldError
			if !errors.Is(err, outbox.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Enqueue: %v; want an ErrInvalid FieldError naming %s", err, tc.field)
			}
			if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
				t.Fatalf("a rejected batch wrote %d events, want none", len(got))
			}
			if err := h.EnqueueInTx(context.Background(), true, event("t", "good", "u"), tc.event); !errors.Is(err, outbox.ErrInvalid) {
				t.Fatalf("EnqueueInTx: %v, want ErrInvalid", err)
			}
			if got := list(t, h.Store, outbox.Filter{}); len(got) != 0 {
				t.Fatalf("a rejected transactional batch wrote %d events, want none", len(got))
			}
		})
	}
}

func testGetNotFound(t *testing.T, h Harness) {
	_, err := h.Store.Get(context.Background(), uuid.NewString())
	if !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
}
