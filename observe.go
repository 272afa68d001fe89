package outbox

import "time"

// The optional Observer extensions below are for tracing: an Observer that implements
// one is told more, and an Observer that does not keeps compiling and working.

// SettleObserver is an Observer also told about each Settle round trip: how many
// outcomes it recorded, how long it took (retries included) and its final error.
type SettleObserver interface {
	ObserveSettle(n int, d time.Duration, err error)
}

// LeaseObserver is an Observer also told when a lease renewal finds that events of
// the batch in flight are no longer held (another processor took them over): their
// outcomes will not be recorded by this processor.
type LeaseObserver interface {
	ObserveLeaseLost(ids []string)
}
