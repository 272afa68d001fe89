package sinktest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started (proxies, their relays, batches in
// flight) outlives them, and keeps the stand-in sinks of these tests out of the
// results files that docs/sinks.md's table is built from.
func TestMain(m *testing.M) {
	keepResults = false
	goleak.VerifyTestMain(m)
}
