package outbox

import (
	"context"
	"errors"
	"sync"
)

// Shadow is a Handler for a shadow run: it delivers nothing. It counts every event it
// is given and, with a compare function, checks each against what the application's
// existing delivery path did, so that a team can write events beside that path,
// compare, and rely on the outbox only once the two agree. Events it handles complete:
// a shadow run never fails an event, so nothing waits behind it when the real handler
// takes over.
//
// compare returns nil when the event agrees with the existing path, or an error saying
// how it differs, which Shadow records. An error that wraps a context error (the
// processor stopping, a timeout) is not a difference: the attempt fails and is retried.
// A nil compare records only the count.
type Shadow struct {
	compare func(ctx context.Context, e Event) error

	mu    sync.Mutex
	seen  int
	diffs []ShadowDifference
}

// ShadowDifference is an event whose compare function found it differing.
type ShadowDifference struct {
	Event Event
	Err   error
}

// NewShadow returns a Shadow that checks each event with compare (which may be nil).
func NewShadow(compare func(ctx context.Context, e Event) error) *Shadow {
	return &Shadow{compare: compare}
}

// Handle implements Handler.
func (s *Shadow) Handle(ctx context.Context, e Event) error {
	var err error
	if s.compare != nil {
		err = s.compare(ctx, e)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	if err != nil {
		s.diffs = append(s.diffs, ShadowDifference{Event: e, Err: err})
	}
	return nil
}

// Seen returns how many events the shadow has handled (a redelivered event counts again).
func (s *Shadow) Seen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// Differences returns the events that differed, in the order they were handled.
func (s *Shadow) Differences() []ShadowDifference {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ShadowDifference(nil), s.diffs...)
}
