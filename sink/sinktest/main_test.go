package sinktest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started (proxies, their relays, batches in
// flight) outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
