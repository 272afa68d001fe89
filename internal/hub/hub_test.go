package hub_test

import (
	"testing"

	"github.com/fitiq/outbox/internal/hub"
)

func woken(wake <-chan struct{}) bool {
	select {
	case <-wake:
		return true
	default:
		return false
	}
}

func TestWakeSignalsTheUsersSubscribersAndThoseForEveryUser(t *testing.T) {
	var h hub.Hub
	if !h.Empty() {
		t.Fatal("a new hub has subscribers")
	}
	alice, _ := h.Subscribe("alice")
	bob, _ := h.Subscribe("bob")
	anyone, _ := h.Subscribe("")

	h.Wake(map[string]struct{}{"alice": {}}, false)
	if !woken(alice) || woken(bob) || !woken(anyone) {
		t.Error("a wake-up for alice: want alice's and everyone's subscribers, not bob's")
	}
	h.Wake(nil, false)
	if woken(alice) || woken(bob) || !woken(anyone) {
		t.Error("a wake-up for nobody in particular: want only the subscribers for every user")
	}
	h.Wake(nil, true)
	if !woken(alice) || !woken(bob) || !woken(anyone) {
		t.Error("a wake-up for all: want every subscriber")
	}
}

func TestWakeNeverBlocksAndKeepsOneWaiting(t *testing.T) {
	var h hub.Hub
	wake, _ := h.Subscribe("alice")
	for range 3 {
		h.Wake(nil, true)
	}
	if !woken(wake) || woken(wake) {
		t.Error("three wake-ups unread: want one waiting")
	}
}

func TestUnsubscribedChannelsAreNotWoken(t *testing.T) {
	var h hub.Hub
	wake, unsubscribe := h.Subscribe("")
	unsubscribe()
	if !h.Empty() {
		t.Error("subscribers left after the only one unsubscribed")
	}
	h.Wake(nil, true)
	if woken(wake) {
		t.Error("woken after unsubscribing")
	}
}
