package sinktest_test

import (
	"errors"
	"fmt"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/sinktest"
)

// Classify reads a sink's error as the processor does.
func ExampleClassify() {
	denied := errors.New("http 401 Unauthorized")
	for _, err := range []error{
		nil,
		outbox.Unavailable(errors.New("dial tcp 127.0.0.1:4222: connection refused")),
		outbox.SuspectedFault(outbox.ReasonCredentials, outbox.Permanent(denied)),
		outbox.TargetFault(outbox.ReasonTargetMissing, "orders", errors.New("unknown topic")),
		outbox.Permanent(errors.New("http 422 Unprocessable Entity")),
		errors.New("http 503 Service Unavailable"),
	} {
		fmt.Println(sinktest.Classify(err))
	}
	// Output:
	// delivered
	// held: destination unreachable
	// suspected: credentials rejected
	// held: target missing (one target)
	// given up
	// retry
}
