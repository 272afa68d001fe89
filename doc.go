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
//   - Permanent, RetryAfter and Unavailable: what a handler's error says. An
//     Unavailable one (the destination cannot be reached) spends no attempt, and a run
//     of them opens the processor's circuit breaker (BreakerConfig) until a probe gets
//     through.
//   - Stats, Health and CheckHealth: counts (stale, stuck, blocked, the outcomes of a
//     recent window), and the alert rules (HealthRules).
//
// Delivery is at least once: a handler may see an event again (after a crash, or when an
// outcome could not be recorded), so receivers deduplicate on Event.ID or the entity ID.
// Events that share an OrderingKey are delivered one at a time, in the order they were
// written; priority orders everything else.
package outbox
