package sinktest

import (
	"cmp"
	"errors"

	"github.com/fitiq/outbox"
)

// Class is what the processor does with the result of one delivery. The values are
// the words the conformance table uses.
type Class string

// The classes, in the order the processor tells them apart (see Classify).
const (
	// Delivered: the sink returned nil; the event is completed.
	Delivered Class = "delivered"
	// Held: the destination is at fault (unreachable, credentials rejected, target
	// missing). No attempt is spent; delivery is held, and probed, until it recovers.
	Held Class = "held"
	// Suspected: the sink cannot tell the destination's fault from the event's (an
	// HTTP 401 or 404). Held while nothing else gets through; otherwise judged as the
	// error it wraps.
	Suspected Class = "suspected"
	// GivenUp: the error is marked permanent; the event is given up at once, kept and
	// visible for an operator.
	GivenUp Class = "given up"
	// Retry: any other error; the attempt is spent and the event retried after a
	// backoff.
	Retry Class = "retry"
)

// Verdict is the classification of one delivery, with the cause the processor would
// name to the operator when the delivery is held or suspected.
type Verdict struct {
	Class Class `json:"class"`
	// Reason is the DestinationError's Reason (outbox.ReasonCredentials, say) for Held
	// and Suspected; empty otherwise.
	Reason string `json:"reason,omitempty"`
	// Target is the DestinationError's Target, when only a part of the destination
	// (a topic, a queue) is at fault.
	Target string `json:"target,omitempty"`
}

// String reads as the conformance table does: "held: credentials rejected",
// "held: target missing (one target)", "retry".
func (v Verdict) String() string {
	s := string(v.Class)
	if v.Reason != "" {
		s += ": " + v.Reason
	}
	if v.Target != "" {
		// The target's name (a topic made up per test run) would make the table
		// change at every run; that the hold is narrowed to it is what matters.
		s += " (one target)"
	}
	return s
}

// Classify says what the processor does with err, the result a sink returned for one
// event:
//
//	nil                                             Delivered
//	*outbox.DestinationError, Suspected             Suspected (with its Reason)
//	*outbox.DestinationError, not Suspected         Held (with its Reason and Target)
//	outbox.IsUnavailable (a refused dial, say)      Held (outbox.ReasonUnreachable)
//	outbox.IsPermanent                              GivenUp
//	anything else                                   Retry
//
// A DestinationError decides even when it wraps a Permanent error: the fault is the
// destination's, so the event is held rather than given up.
func Classify(err error) Verdict {
	if err == nil {
		return Verdict{Class: Delivered}
	}
	var de *outbox.DestinationError
	if errors.As(err, &de) {
		// An empty Reason reads as unreachable, as DestinationError.Error says it.
		v := Verdict{Reason: cmp.Or(de.Reason, outbox.ReasonUnreachable), Target: de.Target}
		if de.Suspected {
			v.Class = Suspected
		} else {
			v.Class = Held
		}
		return v
	}
	if outbox.IsUnavailable(err) {
		return Verdict{Class: Held, Reason: outbox.ReasonUnreachable}
	}
	if outbox.IsPermanent(err) {
		return Verdict{Class: GivenUp}
	}
	return Verdict{Class: Retry}
}

// matches reports whether got is what want asks for: the same Class, and the same
// Reason and Target where want names them.
func (want Verdict) matches(got Verdict) bool {
	return got.Class == want.Class &&
		(want.Reason == "" || got.Reason == want.Reason) &&
		(want.Target == "" || got.Target == want.Target)
}
