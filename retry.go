package outbox

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// The retry defaults.
const (
	// DefaultMaxAttempts is the attempt budget: after the fifth failed attempt an event
	// is given up.
	DefaultMaxAttempts = 5
	// DefaultJitter spreads each delay by ±10 %.
	DefaultJitter = 0.1
)

// DefaultRetryDelays is the default backoff: the delay after the 1st, 2nd, … failed
// attempt. The last one repeats for attempts beyond the list.
var DefaultRetryDelays = []time.Duration{
	1 * time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute,
}

// RetryPolicy decides when a failed event is attempted again, and when it is given up.
type RetryPolicy struct {
	// Delays is the wait after the 1st, 2nd, … failed attempt; the last repeats.
	// Defaults to DefaultRetryDelays.
	Delays []time.Duration
	// MaxAttempts is the attempt budget of events that do not set their own. Defaults to
	// DefaultMaxAttempts.
	MaxAttempts int
	// Jitter spreads each delay uniformly by ±Jitter×delay, so that events failed
	// together do not return together. Defaults to DefaultJitter; negative disables jitter.
	Jitter float64
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if len(p.Delays) == 0 {
		p.Delays = DefaultRetryDelays
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter
	}
	return p
}

// Validate reports the first field of p that cannot work, naming it (as a field of
// RetryPolicy: Config.Validate names it as one of Config.Retry).
func (p RetryPolicy) Validate() error {
	for i, d := range p.Delays {
		if d < 0 {
			return fieldError(fmt.Sprintf("Delays[%d]", i), fmt.Sprintf("must not be negative, got %s", d))
		}
	}
	if p.MaxAttempts < 0 {
		return fieldError("MaxAttempts", fmt.Sprintf("must be positive, got %d", p.MaxAttempts))
	}
	if p.Jitter >= 1 || math.IsNaN(p.Jitter) {
		return fieldError("Jitter", fmt.Sprintf("must be below 1, got %g", p.Jitter))
	}
	return nil
}

// Delay is the backoff after the given number of failed attempts (1-based), without jitter.
func (p RetryPolicy) Delay(attempts int) time.Duration {
	p = p.withDefaults()
	i := min(max(attempts, 1), len(p.Delays)) - 1
	return p.Delays[i]
}

// NextAttemptAt is when an event that has failed its attempts-th attempt at now is
// due again, jitter included. It is a pure function of its inputs and the random source.
func (p RetryPolicy) NextAttemptAt(now time.Time, attempts int) time.Time {
	p = p.withDefaults()
	d := p.Delay(attempts)
	if p.Jitter > 0 && d > 0 {
		spread := float64(d) * p.Jitter
		d += time.Duration((rand.Float64()*2 - 1) * spread)
	}
	return now.Add(d)
}
