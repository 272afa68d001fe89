//go:build race

package postgres_test

// logRetentionRace: the tests run under the race detector, which slows the client's
// side of every append and read; the retention test runs fewer events.
const logRetentionRace = true
