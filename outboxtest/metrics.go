package outboxtest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// CheckMetrics fails t unless the metrics that want names (by its "# TYPE" lines)
// are, in reg, exactly what want says in the Prometheus text format: the same series
// with the same values, and no others of those names.
func CheckMetrics(t testing.TB, reg prometheus.Gatherer, want string) {
	t.Helper()
	var names []string
	for line := range strings.Lines(want) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	if len(names) == 0 {
		t.Fatal("CheckMetrics: want names no metric (no # TYPE line)")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}
