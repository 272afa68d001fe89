package sinktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/fitiq/outbox"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want Verdict
	}{
		{"nil", nil, Verdict{Class: Delivered}},
		{"plain error", base, Verdict{Class: Retry}},
		{"timeout", context.DeadlineExceeded, Verdict{Class: Retry}},
		{"permanent", outbox.Permanent(base), Verdict{Class: GivenUp}},
		{"unavailable", outbox.Unavailable(base), Verdict{Class: Held, Reason: outbox.ReasonUnreachable}},
		{"refused dial, unmarked", fmt.Errorf("post: %w", refused), Verdict{Class: Held, Reason: outbox.ReasonUnreachable}},
		{"destination fault", outbox.DestinationFault(outbox.ReasonCredentials, base), Verdict{Class: Held, Reason: outbox.ReasonCredentials}},
		{"destination fault over permanent", outbox.DestinationFault(outbox.ReasonCredentials, outbox.Permanent(base)), Verdict{Class: Held, Reason: outbox.ReasonCredentials}},
		{"target fault", outbox.TargetFault(outbox.ReasonTargetMissing, "orders", base), Verdict{Class: Held, Reason: outbox.ReasonTargetMissing, Target: "orders"}},
		{"suspected, wrapped", fmt.Errorf("deliver: %w", outbox.SuspectedFault(outbox.ReasonCredentials, outbox.Permanent(base))), Verdict{Class: Suspected, Reason: outbox.ReasonCredentials}},
		{"destination error without reason", &outbox.DestinationError{Err: base}, Verdict{Class: Held, Reason: outbox.ReasonUnreachable}},
		{"retry-after", outbox.RetryAfter(base, 5), Verdict{Class: Retry}},
	}
	for _, tc := range tests {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestVerdictMatches(t *testing.T) {
	t.Parallel()
	got := Verdict{Class: Held, Reason: outbox.ReasonTargetMissing, Target: "t-1"}
	for _, tc := range []struct {
		want Verdict
		ok   bool
	}{
		{Verdict{Class: Held}, true},
		{Verdict{Class: Held, Reason: outbox.ReasonTargetMissing}, true},
		{Verdict{Class: Held, Reason: outbox.ReasonTargetMissing, Target: "t-1"}, true},
		{Verdict{Class: Held, Target: "t-2"}, false},
		{Verdict{Class: Held, Reason: outbox.ReasonCredentials}, false},
		{Verdict{Class: Suspected}, false},
	} {
		if tc.want.matches(got) != tc.ok {
			t.Errorf("%+v matches %+v = %v, want %v", tc.want, got, !tc.ok, tc.ok)
		}
	}
}
