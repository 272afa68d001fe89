// Package sinktest is the conformance suite for sinks: one fault matrix that every
// sink (httpsink, natssink, amqpsink, kafkasink, redissink, or a sink of your own)
// runs against its real server, so that each fault is known to end the same way
// whatever the transport. It is exported so that a sink outside this module can run
// it too.
//
// # What a row checks
//
// Each row of the matrix is a Fault: the destination refuses connections, is
// blackholed, restarts mid-batch, rejects the credentials, lacks the target, deletes
// and recreates it, gets one message too large or rejects one, acknowledges after the
// handler timeout, has the connection cut after the request went out, or answers with
// garbage. For each row Run delivers a few events as the processor would (through
// HandleBatch when the sink is an outbox.BatchHandler, else Handle, each call under a
// handler timeout) and checks:
//
//   - the classification: Classify turns each result into what the processor does
//     with it (Delivered, Held, Suspected, GivenUp or Retry, with the Reason and
//     Target of a destination fault), and the row's Verdict must be the one the
//     caller expects of this sink. Expectations differ by transport ("target
//     missing" is a suspected 404 over HTTP, a held topic on Kafka), so the caller
//     gives them;
//   - never delivered without the destination holding it: every event the sink
//     called delivered is read back from the destination;
//   - recovery: once the fault is cleared, what was not delivered (and not given up)
//     goes through, and the destination holds each event at least once, or exactly
//     once where it deduplicates;
//   - error text a store can keep: valid UTF-8, no NUL, at most
//     outbox.MaxErrorLength bytes, whatever the destination answered.
//
// Rows take a few seconds at most (a blackholed row waits out one handler timeout per
// delivery) and nothing asserts on wall time.
//
// # Writing a harness
//
// A sink's test gives Run a Harness, whose Setup builds one row: a destination with
// the fault arranged (or an Inject that arranges it after a warm-up delivery), the
// sink pointed at it, a Held that reads back the event IDs the destination holds, and
// a Fix that clears the fault. A row that cannot happen on the transport returns
// NotApplicable with the reason; it is reported as "n/a: reason", never skipped in
// silence. Faults on the wire come from a Proxy between the sink and its server:
//
//	func TestConformance(t *testing.T) {
//		sinktest.Run(t, sinktest.Harness{Name: "nats", Dedup: true, Setup: setup}, want, sinktest.Parallel())
//	}
//
//	func setup(t *testing.T, c sinktest.Case) sinktest.Setup {
//		proxy := sinktest.StartProxy(t, serverAddr)
//		stream := newStream(t) // a stream of the row's own, deleted at cleanup
//		s := sinktest.Setup{Sink: newSink(t, proxy.Addr(), stream), Held: stream.IDs}
//		set := func(m sinktest.Mode) func(context.Context) error {
//			return func(context.Context) error { return proxy.Set(m) }
//		}
//		switch c.Fault {
//		case sinktest.FaultRefused:
//			s.Inject, s.Fix = set(sinktest.ModeRefuse), set(sinktest.ModePass)
//		case sinktest.FaultRestarted:
//			s.Inject = set(sinktest.ModeRestart)
//		case sinktest.FaultTargetMissing:
//			stream.Delete(t)
//			s.Fix = stream.Create
//		case sinktest.FaultHostileAnswers:
//			return sinktest.Setup{NotApplicable: "answers are parsed by the NATS client, not the sink"}
//		// … one case per Fault
//		}
//		return s
//	}
//
//	var want = map[sinktest.Fault]sinktest.Verdict{
//		sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
//		// … every row that applies; a missing one fails, naming what the sink did
//	}
//
// The HTTP sink's harness, sink/httpsink/conformance_test.go, is a complete one.
//
// # The table
//
// Run records each row's Result. With OUTBOX_SINKTEST_TABLE naming a directory (see
// TableEnv), it writes them there, one file per sink, and TestWriteTable in this
// package turns the files into the markdown table "fault × sink → what happens"
// with Table, for the docs.
package sinktest
