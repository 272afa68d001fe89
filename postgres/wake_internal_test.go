package postgres

import (
	"testing"
	"time"
)

// An enqueue sends its NOTIFY inside its transaction only when the store ran no other
// enqueue for a look interval (4 NotifyDebounce). A spell of one NotifyDebounce was too
// short: writers at about 1,000 transactions a second still found one every few
// transactions, and queued on PostgreSQL's notification lock behind each other.
func TestAnEnqueueNotifiesInsideItsTransactionOnlyAfterALookIntervalWithoutEnqueues(t *testing.T) {
	cfg := Config{NotifyDebounce: time.Millisecond}
	if got := lookInterval(cfg); got != 4*time.Millisecond {
		t.Fatalf("look interval %s, want 4 NotifyDebounce", got)
	}
	s := &Store{cfg: cfg}
	at := time.Unix(1_000_000, 0)
	for i, step := range []struct {
		after time.Duration // since the previous enqueue
		want  bool
	}{
		{0, true},                 // the store's first enqueue
		{time.Millisecond, false}, // one NotifyDebounce later: not quiet enough
		{4*time.Millisecond - time.Microsecond, false}, // just short of a look interval
		{4 * time.Millisecond, true},                   // a whole look interval without enqueues
		{2 * time.Millisecond, false},
		{time.Hour, true},
	} {
		at = at.Add(step.after)
		if got := s.notifyInTx(at); got != step.want {
			t.Errorf("enqueue %d, %s after the previous one: notifies inside its transaction %v, want %v", i, step.after, got, step.want)
		}
	}

	quiet := &Store{cfg: Config{NotifyDebounce: time.Millisecond, DisableNotify: true}}
	if quiet.notifyInTx(at) {
		t.Error("a store with DisableNotify notified inside a transaction")
	}
}
