// Package hub is the subscriber hub of a store's wake-ups: the processors of this
// process that asked to be woken (outbox.Notifier's Subscribe), each for one user or
// for all, and the fan-out that signals them. The SQLite, MySQL and PostgreSQL stores
// share it; what decides when to wake (a commit, a probe, a notification) stays in
// each store.
package hub

import "sync"

// Hub holds the subscriptions. Its zero value is ready to use.
type Hub struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

type subscription struct {
	userID string
	wake   chan struct{}
}

// Subscribe adds a subscription for userID (for every user, when it is empty) and
// returns its channel, on which at most one wake-up waits, and the function that
// removes it.
func (h *Hub) Subscribe(userID string) (<-chan struct{}, func()) {
	sub := &subscription{userID: userID, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*subscription]struct{}{}
	}
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	return sub.wake, func() {
		h.mu.Lock()
		delete(h.subs, sub)
		h.mu.Unlock()
	}
}

// Wake signals the subscribers of users, and those for every user; with all, every
// subscriber. It never blocks: a subscriber with a wake-up already waiting is passed
// over.
func (h *Hub) Wake(users map[string]struct{}, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if _, ok := users[sub.userID]; ok || all || sub.userID == "" {
			select {
			case sub.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Empty reports whether nobody is subscribed.
func (h *Hub) Empty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) == 0
}
