package sqlite

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
