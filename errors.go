package outbox

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Sentinel errors. Stores translate their own errors into these, so callers can branch
// with errors.Is whatever the store.
var (
	// ErrNotFound: no event has the given ID.
	ErrNotFound = errors.New("outbox: event not found")
	// ErrInvalid: an argument or event field is not acceptable; the message names it.
	ErrInvalid = errors.New("outbox: invalid")
	// ErrLeased: the event is held by a processor under a lease that has not expired.
	ErrLeased = errors.New("outbox: event is leased by a processor")
	// ErrClosed: the processor is not running, or is being stopped.
	ErrClosed = errors.New("outbox: processor stopped")
	// ErrNoHandler: no handler is registered for the event's type (a permanent failure).
	ErrNoHandler = errors.New("outbox: no handler for event type")
)

// FieldError names the field that made a value invalid. It matches ErrInvalid.
type FieldError struct {
	Field   string // e.g. "EntityID", "Config.BatchSize"
	Problem string // e.g. "must not be empty"
}

func (e *FieldError) Error() string { return "outbox: " + e.Field + " " + e.Problem }

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldError(field, problem string) error { return &FieldError{Field: field, Problem: problem} }

// within names err's field as a field of parent (RetryPolicy's "Jitter" becomes
// "Config.Retry.Jitter"), so that a part's Validate names only its own fields. Other
// errors, and nil, pass unchanged.
func within(parent string, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	return &FieldError{Field: parent + "." + fe.Field, Problem: fe.Problem}
}

// Permanent marks err as not worth retrying: the processor gives the event up at once,
// keeping the error. A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RetryAfter marks err as retryable no sooner than after d (an HTTP Retry-After, say).
// The processor waits for the longer of d and its own backoff delay.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, after: d}
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.err, e.after)
}
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfterDelay returns the delay requested with RetryAfter anywhere in err's chain.
func RetryAfterDelay(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

// Reasons under which sinks report a destination-wide fault (DestinationError.Reason).
// A sink may use a phrase of its own; these are the common ones, kept identical across
// sinks so that alerts and dashboards read alike.
const (
	ReasonUnreachable   = "destination unreachable"
	ReasonCredentials   = "credentials rejected"
	ReasonTargetMissing = "target missing"
)

// DestinationError is a failed delivery whose cause is the destination, not the event:
// every event sent there would meet it alike (the destination cannot be reached, it
// rejects the credentials, the topic or queue does not exist). The processor does not
// spend the event's attempt on it and does not give it up; it holds delivery (see
// BreakerConfig) with Reason named in its logs, Health and metrics, and probes now and
// then until the destination takes an event again.
type DestinationError struct {
	// Reason names the fault for operators: one of the Reason… constants, or a short
	// phrase of the sink's own ("endpoint answers 404").
	Reason string
	// Target, when set, is the part of the destination at fault (a topic, a stream, a
	// queue): only events that go there are held, and the others go on.
	Target string
	// Suspected says the sink cannot tell whether the fault is the destination's or the
	// event's (an HTTP 404 or 401 may be either). The processor holds such a failure as
	// the destination's while nothing else gets through; an event that fails so again
	// after a later delivery succeeded is judged by Err alone (given up when Err is
	// marked Permanent).
	Suspected bool
	// Err is the failure itself.
	Err error
}

func (e *DestinationError) Error() string {
	reason := cmp.Or(e.Reason, ReasonUnreachable)
	if e.Target != "" {
		reason += " (" + e.Target + ")"
	}
	if e.Err == nil {
		return reason
	}
	return reason + ": " + e.Err.Error()
}

func (e *DestinationError) Unwrap() error { return e.Err }

// destinationError returns the DestinationError in err's chain, unless a Permanent
// mark wraps it: the outer mark wins, so Permanent(Unavailable(err)) is permanent while
// SuspectedFault(reason, Permanent(err)) is the destination's until proved otherwise.
func destinationError(err error) *DestinationError {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch t := e.(type) {
		case *DestinationError:
			return t
		case *permanentError:
			return nil
		}
	}
	var de *DestinationError
	if !IsPermanent(err) && errors.As(err, &de) { // a joined error
		return de
	}
	return nil
}

// Unavailable marks err as a failure to reach the destination at all (it refused the
// connection, its name did not resolve, the broker is down): a DestinationError with
// ReasonUnreachable. A nil err stays nil.
func Unavailable(err error) error { return DestinationFault(ReasonUnreachable, err) }

// DestinationFault marks err as a fault of the whole destination, named by reason
// (ReasonCredentials, say). A nil err stays nil.
func DestinationFault(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &DestinationError{Reason: reason, Err: err}
}

// TargetFault marks err as a fault of one target of the destination (a topic, stream
// or queue named target), named by reason: only events bound there are held. A nil
// err stays nil.
func TargetFault(reason, target string, err error) error {
	if err == nil {
		return nil
	}
	return &DestinationError{Reason: reason, Target: target, Err: err}
}

// SuspectedFault marks err as a failure that may be the destination's or the event's
// (see DestinationError.Suspected). A nil err stays nil.
func SuspectedFault(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &DestinationError{Reason: reason, Suspected: true, Err: err}
}

// IsUnavailable reports whether err is a fault of the destination rather than the
// event: err, or an error it wraps, is a DestinationError that is not merely suspected
// (Unavailable, DestinationFault, TargetFault), or is a network error from before any
// request was sent (a refused or reset dial, a name that did not resolve, an unreachable
// host or network, a dial that timed out). It is the default of
// Config.Breaker.IsUnavailable. Otherwise an error marked Permanent is never unavailable.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if de := destinationError(err); de != nil {
		return !de.Suspected
	}
	if IsPermanent(err) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true // nothing was sent: the attempt cannot have had an effect
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
