// Package outboxtest is the conformance suite every outbox.Store must pass, and the
// test doubles that go with it. It is exported so that a store outside this module
// can run the same suite:
//
//	func TestConformance(t *testing.T) {
//		outboxtest.Run(t, func(t *testing.T) outboxtest.Harness { … a fresh, migrated store … },
//			outboxtest.Parallel())
//	}
//
// The suite is split by area, one file each: enqueue, claim (leases, users, races),
// settle (outcomes, retries, ordering keys), operator actions (update, retry, delete,
// list, cleanup), stats (counts, stale), the processor driven over the store with an
// injected Clock, and the notifier. Time never passes by itself: every test moves a
// Clock, so nothing sleeps out a backoff.
//
// Besides the suite: Clock (a manual outbox.Clock), Recorder (an Observer that lets a
// test wait for deliveries), EnqueueN (a mixed workload), AwaitLine (wait for a server
// process the test started to say it is ready), and Discard (a quiet logger).
package outboxtest
