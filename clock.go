package outbox

import "time"

// Clock tells the time. The processor reads every timestamp it records (claims, leases,
// retries, staleness) from its Clock, so tests can drive time instead of sleeping.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the real time.
var SystemClock Clock = systemClock{}
