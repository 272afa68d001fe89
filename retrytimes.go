package outbox

import (
	"slices"
	"sync"
	"time"
)

// maxRetryTimes bounds what a processor remembers of the retries it scheduled; past
// it, the latest are forgotten and found by the poll instead.
const maxRetryTimes = 1024

// retryTimes remembers the NextAttemptAt of the retries a processor scheduled, so that
// an idle processor wakes when the earliest falls due rather than at its next poll.
type retryTimes struct {
	mu    sync.Mutex
	times []time.Time // ascending
}

func (r *retryTimes) add(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.times, t, time.Time.Compare)
	if i >= maxRetryTimes {
		return
	}
	r.times = slices.Insert(r.times, i, t)
	if len(r.times) > maxRetryTimes {
		r.times = r.times[:maxRetryTimes]
	}
}

// next forgets the times up to now and returns the earliest that is left; passed
// reports whether it forgot any (a retry fell due). A passed time is forgotten, so that
// a retry that is due but cannot be claimed (behind its ordering key, taken by another
// processor) does not keep the processor awake.
func (r *retryTimes) next(now time.Time) (next time.Time, passed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.times, now, time.Time.Compare)
	for i < len(r.times) && !r.times[i].After(now) {
		i++
	}
	passed = i > 0
	r.times = r.times[i:]
	if len(r.times) == 0 {
		return time.Time{}, passed
	}
	return r.times[0], passed
}
