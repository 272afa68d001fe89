// Package suspicion decides whose fault a suspected failure is (outbox.DestinationError
// with Suspected set): the Processor and the log relays share it.
//
// An event that fails so is the destination's case until a delivery that started after
// that failure succeeds: then, if the event fails alike again, the destination is
// taking other events, and the failure is the event's own.
package suspicion

import "sync"

// maxSuspects bounds how many events' suspected failures are remembered; past it they
// are all forgotten, which only delays a verdict (an event is held once more before its
// failure counts as its own).
const maxSuspects = 4096

// Suspicion numbers deliveries as they start and remembers, per event, when it last
// failed suspected. The zero value is ready; it is safe for concurrent use.
type Suspicion struct {
	mu       sync.Mutex
	started  uint64            // deliveries started so far
	lastOK   uint64            // the start number of the latest delivery that succeeded
	failedAt map[string]uint64 // event ID → deliveries started when it last failed suspected
}

// Start numbers a delivery that is starting.
func (s *Suspicion) Start() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started++
	return s.started
}

// Succeeded records that the delivery numbered n, of event id, succeeded.
func (s *Suspicion) Succeeded(n uint64, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastOK = max(s.lastOK, n)
	delete(s.failedAt, id)
}

// EventsFault records a suspected failure of event id and reports whether it is the
// event's own: it failed so before, and a delivery started since then succeeded.
func (s *Suspicion) EventsFault(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.failedAt[id]; ok && s.lastOK > prev {
		delete(s.failedAt, id)
		return true
	}
	if s.failedAt == nil || len(s.failedAt) >= maxSuspects {
		s.failedAt = map[string]uint64{}
	}
	s.failedAt[id] = s.started
	return false
}
