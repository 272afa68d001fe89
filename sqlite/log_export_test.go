package sqlite

// The log's statements, for the tests of their query plans.
const (
	ReadLogQuery = readLog
	TrimLogQuery = trimLog
)
