// Package outbox implements the transactional outbox pattern: a change to your data and
// the event that announces it are written in one database transaction, and a Processor
// delivers the event afterwards — at least once, in batches, a few at a time, retrying
// failures with exponential backoff and giving up after a budget of attempts, keeping a
// record of every attempt.
//
// The pieces:
//
//   - Event and Status: the row written beside your data, and where it stands.
//   - Store: the port a Processor works through. The sqlite package is the embedded
//     default; the postgres package serves several relays at once. Each store offers an
//     EnqueueTx that writes events in the caller's own transaction and never commits it.
//   - Processor with Config: claims due events under a lease, calls a Handler, and
//     records each outcome: completed, retried later under a RetryPolicy, or given up.
//   - Permanent, RetryAfter and DestinationError (Unavailable, DestinationFault,
//     TargetFault, SuspectedFault): what a handler's error says. A fault of the
//     destination spends no attempt and holds delivery (BreakerConfig), the whole
//     destination or one target of it, with its reason named, until a probe gets
//     through; a Permanent one gives the event up at once.
//   - Observers (Config.Observers): metrics, tracing, tallies; the processor tells
//     every one.
//   - Stats, Health and CheckHealth: counts (stale, stuck, blocked, the outcomes of a
//     recent window), and the alert rules (HealthRules).
//
// Delivery is at least once: a handler may see an event again (after a crash, or when an
// outcome could not be recorded), so receivers deduplicate on Event.ID or the entity ID.
// Events that share an OrderingKey are delivered one at a time, in the order they were
// written; priority orders everything else.
//
// # For store authors
//
// An application needs none of the following; a Store implementation uses them so that
// every store behaves alike, and outboxtest.Run checks that it does:
//
//   - Event.Prepare validates an event and fills its ID, status and times; then
//     EnqueueHook.Run runs the store's Config.OnEnqueue hook on it, before it is written.
//   - Timestamp truncates a time to what every store keeps (microseconds, UTC).
//   - CanonicalID and CanonicalIDs accept the spellings of an ID a user may type.
//   - ValidateType and Filter.Validate check an operator's arguments.
//   - Stats.Add builds Stats from grouped counts.
//   - ClaimParams, Outcome and Result: what Claim and Settle take, including
//     SkipTypes (held targets) and a Released outcome's reason.
//   - The optional interfaces a store may implement: Notifier (wake-ups), TypePauser,
//     Timeline and KeyInspector.
package outbox
