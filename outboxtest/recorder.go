package outboxtest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// Recorder is an outbox.Observer for tests that break something in the middle of a
// run (kill a broker, cut a connection): it counts outcomes, can hold the processor
// once a given number of events has been delivered, and signals the first retryable
// failure and the last delivery.
type Recorder struct {
	Delivered, Failed, GivenUp atomic.Int64 // failed: retryable failures
	// Unavailable counts attempts that could not reach the destination (not counted
	// against their events; the processor's breaker paces them).
	Unavailable atomic.Int64

	total, pauseAt                        int64
	paused, resume, firstFailure, allDone chan struct{}
	resumeOnce, failOnce                  sync.Once
}

// NewRecorder returns a Recorder expecting total deliveries. When pauseAt > 0, the
// delivery that brings the count to pauseAt closes Paused and holds its processor
// until Resume is called.
func NewRecorder(total, pauseAt int64) *Recorder {
	return &Recorder{
		total: total, pauseAt: pauseAt,
		paused: make(chan struct{}), resume: make(chan struct{}),
		firstFailure: make(chan struct{}), allDone: make(chan struct{}),
	}
}

// Paused is closed when the processor is being held at the pause point.
func (r *Recorder) Paused() <-chan struct{} { return r.paused }

// Resume lets a held processor go on. It may be called any number of times; defer it
// so that a failed test does not leave the processor held.
func (r *Recorder) Resume() { r.resumeOnce.Do(func() { close(r.resume) }) }

// FirstFailure is closed at the first retryable or unavailable failure.
func (r *Recorder) FirstFailure() <-chan struct{} { return r.firstFailure }

// AllDelivered is closed when the expected number of events has been delivered.
func (r *Recorder) AllDelivered() <-chan struct{} { return r.allDone }

// Wait waits for ch, failing t with what it was waiting for (and the counts so far)
// after timeout.
func (r *Recorder) Wait(t testing.TB, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("gave up waiting for %s (delivered %d, failed %d, given up %d)",
			what, r.Delivered.Load(), r.Failed.Load()+r.Unavailable.Load(), r.GivenUp.Load())
	}
}

// ObserveClaim implements outbox.Observer.
func (r *Recorder) ObserveClaim(int, time.Duration) {}

// ObserveDelivery implements outbox.Observer.
func (r *Recorder) ObserveDelivery(_ outbox.Event, o outbox.Outcome, _ time.Duration) {
	switch {
	case o.Result == outbox.Delivered:
		n := r.Delivered.Add(1)
		if n == r.pauseAt {
			close(r.paused)
			<-r.resume
		}
		if n == r.total {
			close(r.allDone)
		}
	case o.Result == outbox.Failed && o.NextAttemptAt.IsZero():
		r.GivenUp.Add(1)
	case o.Result == outbox.Failed:
		r.Failed.Add(1)
		r.failOnce.Do(func() { close(r.firstFailure) })
	}
}

// ObserveUnavailable implements outbox.BreakerObserver.
func (r *Recorder) ObserveUnavailable(outbox.Event, error) {
	r.Unavailable.Add(1)
	r.failOnce.Do(func() { close(r.firstFailure) })
}

// ObserveHold implements outbox.BreakerObserver.
func (r *Recorder) ObserveHold(string, string, bool) {}
