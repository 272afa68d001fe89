package outboxtest

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// Harness is one fresh, migrated, empty store for one test.
type Harness struct {
	Store outbox.Store
	// EnqueueInTx writes events with the store's transactional enqueue inside a
	// transaction of the store's own kind, then commits it (commit true) or rolls it back.
	EnqueueInTx func(ctx context.Context, commit bool, events ...*outbox.Event) error
	// WithEnqueueHook returns a harness for another store on the same database whose
	// Config.OnEnqueue is hook. Without it, the suite skips the enqueue-hook test,
	// saying so.
	WithEnqueueHook func(hook outbox.EnqueueHook) Harness
	// SetMetadataJSON writes text, JSON, into the metadata column of the event id by
	// SQL, as a writer in another language may (docs/any-language.md). Without it, the
	// suite skips the test of rows that break the contract, saying so.
	SetMetadataJSON func(ctx context.Context, id, text string) error
}

// T0 is the time the suite's clocks start at.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Option changes how Run runs the suite.
type Option func(*options)

type options struct{ parallel bool }

// Parallel runs the subtests in parallel. Use it when every harness is a store of its
// own (a fresh file, schema or database), so that tests cannot see each other's events.
func Parallel() Option { return func(o *options) { o.parallel = true } }

// Run runs the conformance suite. newHarness is called once per subtest and must
// return an empty store; it should register its own cleanup with t.Cleanup. The
// subtests run one at a time unless Parallel is given.
func Run(t *testing.T, newHarness func(t *testing.T) Harness, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"EnqueueFillsAndRoundTrips", testEnqueueRoundTrip},
		{"EnqueueInRolledBackTxLeavesNothing", testEnqueueRolledBack},
		{"EnqueueInvalidWritesNothing", testEnqueueInvalid},
		{"EnqueueRunsItsStoresOwnHook", testEnqueueRunsHook},
		{"GetUnknownIsNotFound", testGetNotFound},
		{"ClaimOrdersByPriorityThenSeq", testClaimPriority},
		{"ClaimLeasesAndCountsAttempt", testClaimLeases},
		{"ClaimServesOneUser", testClaimUser},
		{"ConcurrentClaimsNeverOverlap", testConcurrentClaims},
		{"ExpiredLeaseIsClaimedAgain", testLeaseExpiry},
		{"ExpiredLeaseWithoutAttemptsLeftIsGivenUp", testLeaseExpiryGivesUp},
		{"ExtendLeaseKeepsEventsAndReportsLost", testExtendLease},
		{"SettleRecordsEachOutcome", testSettle},
		{"SettleSkipsEventsNotHeld", testSettleNotHeld},
		{"SettleReleasedKeepsItsReasonWithoutCountingIt", testSettleReleasedKeepsItsReason},
		{"RetryIsDueOnlyAtItsTime", testRetryDue},
		{"OrderingKeyDeliversOneAtATimeInOrder", testOrderingKey},
		{"GivenUpHeadBlocksItsKey", testGivenUpHeadBlocks},
		{"DeleteCompletedRemovesOnlyOldCompleted", testDeleteCompleted},
		{"StatsCountByStatusTypeAndUser", testStats},
		{"StaleEventsAreListedAndCounted", testStale},
		{"UpdateWritesBackResetForRetry", testUpdate},
		{"RetryResetsMatchingEvents", testRetry},
		{"DeleteRemovesEvents", testDelete},
		{"ListFiltersAndPages", testList},
		{"OtherSpellingsOfIDFindTheSameEvent", testOtherSpellingsOfID},
		{"ProcessorBacksOffThenGivesUp", testProcessorBackoff},
		{"ProcessorGivesUpPermanentErrorsAtOnce", testProcessorPermanent},
		{"ProcessorKeepsKeyOrderUnderConcurrency", testProcessorOrdering},
		{"ProcessorHealthRaisesTheDefaultAlerts", testProcessorHealth},
		{"NotifierWakesOnCommit", testNotifier},
		{"ClaimServesOnlyItsTypes", testClaimServesOnlyItsTypes},
		{"ClaimSkipsSkipTypes", testClaimSkipsSkipTypes},
		{"ScopedClaimGivesUpOnlyItsTypes", testScopedClaimGivesUpOnlyItsTypes},
		{"PausedTypeWaitsAndResumes", testPausedTypeWaits},
		{"ProcessorScopedToTypesLeavesOthersPending", testProcessorScopedToTypes},
		{"ScopedProcessorsDrainDisjointTypes", testScopedProcessorsDrainDisjointTypes},
		{"TimelineCountsSettlementsPerMinute", testTimeline},
		{"KeyHeadIsTheEarliestUnfinishedEvent", testKeyHead},
		{"StuckEventsAreCountedListedAndAlerted", testStuck},
		{"FailureRateWindowIgnoresCleanup", testRecentWindowIgnoresCleanup},
		{"FailureRateWindowSeesRecentGiveUpsPastOldCompletions", testRecentWindowSeesAnOutage},
		{"BlockedEventsAreListed", testListBlocked},
		{"AttemptNumbersContinueAfterOperatorRetry", testAttemptNumbersContinue},
		{"DuplicateIDIsRefusedNamingID", testDuplicateIDNamesID},
		{"TextNoStoreCanHoldIsRefused", testNULRefused},
		{"ProcessorHealthAlertsOnStuckEvents", testProcessorHealthStuck},
		{"ProcessorOutagePausesAndGivesNothingUp", testProcessorOutageGivesNothingUp},
		{"MetadataNotAnObjectOfStringsIsGivenUp", testUnusableMetadataIsGivenUp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if o.parallel {
				t.Parallel()
			}
			h := newHarness(t)
			tc.fn(t, h)
		})
	}
}

// event returns a valid event for tests.
func event(typ, entity, user string) *outbox.Event {
	return outbox.NewEvent(typ, entity, user)
}

func mustEnqueue(t *testing.T, s outbox.Store, now time.Time, events ...*outbox.Event) {
	t.Helper()
	if err := s.Enqueue(context.Background(), now, events...); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

func claim(t *testing.T, s outbox.Store, owner string, now time.Time, limit int) []outbox.Event {
	t.Helper()
	return claimWith(t, s, outbox.ClaimParams{Owner: owner, Now: now, LeaseUntil: now.Add(30 * time.Second), Limit: limit})
}

func claimWith(t *testing.T, s outbox.Store, p outbox.ClaimParams) []outbox.Event {
	t.Helper()
	events, err := s.Claim(context.Background(), p)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return events
}

func settle(t *testing.T, s outbox.Store, owner string, now time.Time, outcomes ...outbox.Outcome) {
	t.Helper()
	if err := s.Settle(context.Background(), owner, now, outcomes); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

func get(t *testing.T, s outbox.Store, id string) outbox.Event {
	t.Helper()
	e, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return e
}

func ids(events []outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func entityIDs(events []outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EntityID
	}
	return out
}

func list(t *testing.T, s outbox.Store, f outbox.Filter) []outbox.Event {
	t.Helper()
	events, err := s.List(context.Background(), f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return events
}

func stats(t *testing.T, s outbox.Store, q outbox.StatsQuery) outbox.Stats {
	t.Helper()
	st, err := s.Stats(context.Background(), q)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}
