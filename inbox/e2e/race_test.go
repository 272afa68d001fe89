//go:build race

package e2e_test

// The race detector slows every process about tenfold; CI runs the tests with it, so
// the run is cut to a tenth there (the full size runs without -race).
const raceBuild = true
