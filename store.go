package outbox

import (
	"context"
	"fmt"
	"time"
)

// Store is the port a Processor and an operator work through. The sqlite and postgres
// packages implement it; outboxtest checks that an implementation behaves.
//
// Enqueueing inside the caller's own transaction is not part of the port, because the
// transaction type is the store's: see sqlite.Store.EnqueueTx and postgres.Store.EnqueueTx.
// Every method that changes events takes the time to record as an argument, so that
// callers (and tests) decide what "now" is.
// Every enqueue path (Enqueue, EnqueueTx and the like) calls Event.Prepare and then
// its Config.OnEnqueue hook for each event, so that the trace it is written under goes with it.
type Store interface {
	// Enqueue writes events in a transaction of its own: all or none. It fills each
	// event's ID, Seq, Status and times.
	Enqueue(ctx context.Context, now time.Time, events ...*Event) error

	// Claim leases up to p.Limit due events to p.Owner and returns them in the order
	// they should be delivered. See ClaimParams for what "due" means.
	Claim(ctx context.Context, p ClaimParams) ([]Event, error)
	// ExtendLease moves the lease expiry of events owner still holds to until.
	// It returns the IDs whose lease was lost (taken by another owner, or settled).
	ExtendLease(ctx context.Context, owner string, ids []string, until time.Time) (lost []string, err error)
	// Settle records the outcome of deliveries owner attempted, in one transaction.
	// An outcome for an event owner no longer holds is skipped. A failure is appended
	// to the event's history (Event.Errors) numbered one more than the entries already
	// there, so that attempt numbers go on across an operator's Retry.
	Settle(ctx context.Context, owner string, now time.Time, outcomes []Outcome) error

	// Get returns one event, or ErrNotFound.
	Get(ctx context.Context, id string) (Event, error)
	// List returns events matching f, oldest (lowest Seq) first.
	List(ctx context.Context, f Filter) ([]Event, error)
	// Update writes the mutable fields of e (status, attempts, max attempts, priority,
	// metadata, next attempt, completion, last error) back, as an
	// operator tool does after ResetForRetry. It returns ErrLeased when a processor holds the event
	// and ErrNotFound when it does not exist.
	Update(ctx context.Context, now time.Time, e *Event) error
	// Retry puts the events matching f that are not completed and not held under a live
	// lease back to pending with a fresh attempt budget (an operator's "retry").
	// f.Status defaults to failed. It returns how many it reset.
	Retry(ctx context.Context, now time.Time, f Filter) (int, error)
	// Delete removes events by ID, whatever their status (an operator's "discard").
	Delete(ctx context.Context, ids ...string) (int, error)
	// DeleteCompleted removes up to limit events completed before the given time and
	// returns how many it removed; callers loop until it returns fewer than limit.
	DeleteCompleted(ctx context.Context, before time.Time, limit int) (int, error)

	// Stats counts events, overall or for one user, from indexed queries: by status,
	// stale, stuck and blocked, the oldest waiting and due, and, when q.Window is set,
	// the outcomes of that window (Stats.Recent) from indexed times.
	Stats(ctx context.Context, q StatsQuery) (Stats, error)
}

// Notifier is implemented by stores that can announce committed events, so that a
// processor wakes at once instead of at its next poll. The channel receives a value
// (coalesced: one pending wake-up at most) whenever events for userID, or for any
// user when userID is empty, may have been enqueued. cancel releases the subscription.
type Notifier interface {
	Subscribe(userID string) (wake <-chan struct{}, cancel func())
}

// ClaimParams selects and leases due events. An event is due when it is pending, failed
// with NextAttemptAt <= Now, or processing under a lease that expired at or before Now.
// An event with an OrderingKey is claimed only when every earlier (lower Seq) event of
// its key is completed, so at most one event of a key is ever in flight.
type ClaimParams struct {
	Owner      string    // lease owner: a processor's unique name
	Now        time.Time // the time of the claim
	LeaseUntil time.Time // lease expiry written on claimed events
	Limit      int       // at most this many events
	UserID     string    // when set, only this user's events
	// DefaultMaxAttempts applies to events without their own MaxAttempts: an event found
	// under an expired lease with no attempts left is given up instead of claimed.
	DefaultMaxAttempts int
	// SkipGivenUp lets events of a key proceed past a given-up earlier event of the same
	// key; by default they wait (and are reported as blocked) until an operator acts.
	SkipGivenUp bool
	// Types, when set, limits the claim to events of these types; the others stay as
	// they are, for the processors that serve them. Events of a paused type (see
	// TypePauser) are never claimed, whatever Types says.
	Types []string
	// SkipTypes, when set, leaves events of these types out of the claim, as they are
	// (not claimed, no attempt spent, nothing given up): the processor holds them while
	// the target they are delivered to is failing (see DestinationError.Target).
	SkipTypes []string
}

// TypePauser is implemented by stores that can pause event types. The pause is kept
// in the store, so every processor of the store obeys it, in every process and across
// restarts: a paused type's events are not claimed, their attempts are not spent, and
// nothing of them is given up, until the type is resumed. Stats counts them apart
// (Stats.Paused) so that a paused backlog is reported but not alerted as stale.
type TypePauser interface {
	// PauseType pauses eventType from now on. Pausing a paused type keeps its first time.
	PauseType(ctx context.Context, eventType string, now time.Time) error
	// ResumeType lets processors claim eventType again. It reports whether the type was paused.
	ResumeType(ctx context.Context, eventType string) (bool, error)
	// PausedTypes lists the paused types, in name order.
	PausedTypes(ctx context.Context) ([]PausedType, error)
}

// PausedType is one paused event type and since when.
type PausedType struct {
	Type  string    `json:"type"`
	Since time.Time `json:"since"`
}

// ValidateType checks an event type given to pause or scope a processor.
func ValidateType(field, eventType string) error {
	switch {
	case eventType == "":
		return fieldError(field, "must not be empty")
	case len(eventType) > MaxFieldLength:
		return fieldError(field, fmt.Sprintf("is %d bytes, over the limit of %d", len(eventType), MaxFieldLength))
	}
	return nil
}

// Result is what became of one delivery attempt.
type Result int

const (
	// Delivered: the event is completed.
	Delivered Result = iota + 1
	// Failed: the attempt failed. With a NextAttemptAt the event is retried then;
	// with a zero NextAttemptAt it is given up.
	Failed
	// Released: the attempt never started (the processor was stopping) or does not
	// count (the delivery failed through the destination's fault, see DestinationError,
	// and the event is held until the destination recovers). The event goes back as it
	// was, due at once: the attempt does not count, nothing is given up, and nothing is
	// added to its history (Event.Errors). A non-empty Outcome.Error is written to
	// Event.LastError, so that operators see why the event waits; an empty one leaves
	// LastError as it was.
	Released
)

// Outcome is the result of one claimed event, for Store.Settle.
type Outcome struct {
	ID     string
	Result Result
	// Error is the reason. For Failed it becomes LastError and is appended to the
	// event's history. For Released, when not empty, it becomes LastError only (the
	// attempt did not count, so the history is left as it is); empty keeps LastError.
	Error         string
	NextAttemptAt time.Time // for Failed; zero gives the event up
}

// Filter selects events for List and Retry. Zero fields do not filter.
type Filter struct {
	IDs    []string
	Status Status
	// GivenUp narrows to failed events with no next attempt (implies Status failed).
	GivenUp bool
	// DueBefore narrows to pending or retrying events due before this time: the stale ones,
	// when it is now minus the stale threshold.
	DueBefore time.Time
	// StuckAt narrows to processing events whose lease expired at or before this time:
	// the stuck ones, when it is now (their processor died, and none has taken them over).
	StuckAt time.Time
	// Blocked narrows to waiting (pending or retrying) events behind a given-up earlier
	// event of their ordering key, as Stats.Blocked counts them.
	Blocked  bool
	Type     string
	UserID   string
	AfterSeq int64 // for paging: only events with a larger Seq
	Limit    int   // at most this many (List defaults to 100)
}

// Validate reports whether f can select events: a known status and a limit that is not
// negative. Stores call it before they query.
func (f Filter) Validate() error {
	if f.Status != "" && !f.Status.Valid() {
		_, err := ParseStatus(string(f.Status))
		return err
	}
	if f.Limit < 0 {
		return fieldError("Filter.Limit", fmt.Sprintf("must not be negative, got %d", f.Limit))
	}
	return nil
}

// StatsQuery scopes Stats.
type StatsQuery struct {
	UserID     string        // empty: all users
	Now        time.Time     // reference time for ages and staleness
	StaleAfter time.Duration // events due longer than this are stale
	// Window, when positive, asks for Stats.Recent: the outcomes of the last Window
	// before Now. Zero leaves Recent empty.
	Window time.Duration
}

// Stats is a summary of the outbox: counts by status and type, and how long the
// oldest waiting event has waited.
type Stats struct {
	Total      int `json:"total"`
	Pending    int `json:"pending"`
	Processing int `json:"processing"`
	Completed  int `json:"completed"`
	// Failed counts failed events that will be retried.
	Failed int `json:"failed"`
	// GivenUp counts failed events with no further attempt.
	GivenUp int `json:"given_up"`
	// Stale counts events that have been due for longer than the stale threshold; events
	// of paused types are not counted.
	Stale int `json:"stale"`
	// Blocked counts events waiting behind a given-up event of the same ordering key.
	Blocked int `json:"blocked"`
	// Stuck counts processing events whose lease expired at or before Now: their
	// processor is gone and no processor has taken them over (a running one would, at
	// its next claim). They are not stale (not pending or retrying), but as stuck.
	Stuck int `json:"stuck"`
	// OldestPendingAge is how long the oldest pending or retrying event has been waiting
	// since it was created; zero when none is.
	OldestPendingAge time.Duration `json:"oldest_pending_age"`
	// OldestDueAge is how long the event due the longest has been due: a pending event
	// since it became pending, a retry since its NextAttemptAt, a stuck event since its
	// lease expired. Zero when none is due. With no processor running it only grows.
	OldestDueAge time.Duration `json:"oldest_due_age"`
	// Recent counts the outcomes of the last StatsQuery.Window (zero when not asked).
	Recent WindowCounts `json:"recent"`
	// ByType counts events by type and status.
	ByType map[string]TypeCounts `json:"by_type,omitempty"`
	// Paused lists the paused types (stores that implement TypePauser); their events
	// wait, counted in PausedWaiting and in the counts above, and are not stale.
	Paused []string `json:"paused,omitempty"`
}

// PausedWaiting counts the pending and retrying events of paused types: the backlog
// that resuming them will release.
func (s Stats) PausedWaiting() int {
	n := 0
	for _, t := range s.Paused {
		tc := s.ByType[t]
		n += tc.Pending + tc.Failed
	}
	return n
}

// WindowCounts counts events by the outcome last recorded for them within a window
// before StatsQuery.Now, from indexed times (CompletedAt for completions, UpdatedAt for
// failures), so the counts do not depend on how many older events are kept. An event
// that failed and then completed within the window counts once, as completed.
type WindowCounts struct {
	Window time.Duration `json:"window"`
	// Completed counts events completed within the window.
	Completed int `json:"completed"`
	// Failed counts events whose last attempt, within the window, failed and will be retried.
	Failed int `json:"failed"`
	// GivenUp counts events given up within the window.
	GivenUp int `json:"given_up"`
}

// FailureRate is the share of the window's outcomes that are failures (retrying or
// given up), from 0 to 1; 0 when the window holds no outcome.
func (w WindowCounts) FailureRate() float64 {
	n := w.Completed + w.Failed + w.GivenUp
	if n == 0 {
		return 0
	}
	return float64(w.Failed+w.GivenUp) / float64(n)
}

// TypeCounts is Stats for one event type.
type TypeCounts struct {
	Pending    int `json:"pending"`
	Processing int `json:"processing"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	GivenUp    int `json:"given_up"`
}

// SuccessRate is the share of settled events (completed, retrying or given up) that
// completed, from 0 to 1; 1 when none has settled yet.
func (s Stats) SuccessRate() float64 {
	settled := s.Completed + s.Failed + s.GivenUp
	if settled == 0 {
		return 1
	}
	return float64(s.Completed) / float64(settled)
}

// Add counts n events of a type and state into s; stores use it to build Stats from
// grouped counts. givenUp applies to StatusFailed.
func (s *Stats) Add(eventType string, status Status, givenUp bool, n int) {
	if s.ByType == nil {
		s.ByType = map[string]TypeCounts{}
	}
	tc := s.ByType[eventType]
	switch {
	case status == StatusPending:
		s.Pending += n
		tc.Pending += n
	case status == StatusProcessing:
		s.Processing += n
		tc.Processing += n
	case status == StatusCompleted:
		s.Completed += n
		tc.Completed += n
	case status == StatusFailed && givenUp:
		s.GivenUp += n
		tc.GivenUp += n
	case status == StatusFailed:
		s.Failed += n
		tc.Failed += n
	}
	s.Total += n
	s.ByType[eventType] = tc
}
