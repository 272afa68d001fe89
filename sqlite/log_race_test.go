//go:build race

package sqlite_test

// raceEnabled: the tests run under the race detector, which slows modernc.org/sqlite
// down about tenfold; the log's longest test runs fewer events.
const raceEnabled = true
