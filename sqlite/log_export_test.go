package sqlite

import "time"

// The log's statements, for the tests of their query plans.
const (
	ReadLogQuery = readLog
	TrimLogQuery = trimLog
	PeekLogQuery = logPeek
	// UnfinishedLogKeysQuery is the relay's lookup of a batch's keys in the events table.
	UnfinishedLogKeysQuery = unfinishedLogKeys
)

// ScanLogEvents decodes the rows of ReadLogQuery, for the read benchmark's limit row.
var ScanLogEvents = scanLogEvents

// SetTrimLimit sets how many events each transaction of the relay's trims deletes.
func (r *LogRelay) SetTrimLimit(n int) { r.trimLimit = n }

// OnAckBusy has f called each time the relay's Ack finds the write lock taken, before
// it decides whether to try again.
func (r *LogRelay) OnAckBusy(f func()) { r.ackBusy = f }

// OnAckWait has f called with each of the Ack's waits for the write lock, from its
// first try to the lock or to giving up.
func (r *LogRelay) OnAckWait(f func(time.Duration)) { r.ackWaited = f }

// AckInBusyHandler has the relay's Ack wait for the write lock in the pool's busy
// handler, as it did before beginAck, for the benchmark's comparison.
func (r *LogRelay) AckInBusyHandler() { r.ackBusyHandler = true }
