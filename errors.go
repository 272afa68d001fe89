package outbox

import (
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

// Unavailable marks err as a failure to reach the destination at all (it refused the
// connection, its name did not resolve, the broker is down): a fault of the way to the
// destination, not of the event. The processor does not count such an attempt against
// the event's budget; after Config.Breaker.Threshold of them in a row it stops
// delivering and probes with one event now and then until the destination answers.
// A nil err stays nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &unavailableError{err}
}

type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return "unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// IsUnavailable reports whether err says the destination could not be reached: err, or
// an error it wraps, was marked with Unavailable, or is a network error from before any
// request was sent (a refused or reset dial, a name that did not resolve, an unreachable
// host or network, a dial that timed out). It is the default of
// Config.Breaker.IsUnavailable. An error marked Permanent is never unavailable.
func IsUnavailable(err error) bool {
	if err == nil || IsPermanent(err) {
		return false
	}
	var u *unavailableError
	if errors.As(err, &u) {
		return true
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
