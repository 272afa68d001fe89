package outboxtest

import (
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

func testNotifier(t *testing.T, h Harness) {
	n, ok := h.Store.(outbox.Notifier)
	if !ok {
		t.Skip("store does not implement outbox.Notifier")
	}
	wake, cancel := n.Subscribe("")
	defer cancel()
	mustEnqueue(t, h.Store, T0, event("t", "e", "u"))
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up within 10s of a committed enqueue")
	}
}
