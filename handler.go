package outbox

import (
	"context"
	"fmt"
)

// Handler delivers one event: to a remote API, a broker, another table. A nil error
// completes the event; an error fails the attempt, to be retried under the RetryPolicy
// unless it is marked with Permanent. Delivery is at least once, so a handler must be
// idempotent on Event.ID (or on the entity it carries).
type Handler interface {
	Handle(ctx context.Context, e Event) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, e Event) error

// Handle calls f(ctx, e).
func (f HandlerFunc) Handle(ctx context.Context, e Event) error { return f(ctx, e) }

// BatchHandler is a Handler that can deliver a whole claimed batch at once, such as a
// broker sink that pipelines its publish acknowledgements. The processor calls
// HandleBatch instead of Handle when the handler implements it; errs[i] is the outcome
// of events[i] and len(errs) must equal len(events).
type BatchHandler interface {
	Handler
	HandleBatch(ctx context.Context, events []Event) (errs []error)
}

// Handlers routes events to a handler by type, one handler per event type.
// An event of a type with no handler fails permanently with ErrNoHandler: it is given
// up, kept and visible, and can be retried once a handler exists.
type Handlers map[string]Handler

// Handle calls the handler registered for e.Type.
func (hs Handlers) Handle(ctx context.Context, e Event) error {
	h, ok := hs[e.Type]
	if !ok {
		return Permanent(fmt.Errorf("%w %q", ErrNoHandler, e.Type))
	}
	return h.Handle(ctx, e)
}
