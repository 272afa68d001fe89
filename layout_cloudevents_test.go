package outbox_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The CloudEvents Go SDK reads, in tests, what the sinks send: an independent parser.
// It is no dependency of the library: no package links it but internal/cetest, which
// only tests import.
func TestCloudEventsSDKOnlyInTests(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH; this test asks it for the import graph")
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const sdk, helper = "github.com/cloudevents/", "github.com/fitiq/outbox/internal/cetest"
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] == helper {
			continue
		}
		checked++
		for _, dep := range fields[1:] {
			if strings.HasPrefix(dep, sdk) || dep == helper {
				t.Errorf("%s links %s", fields[0], dep)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d packages; the listing looks wrong:\n%s", checked, out)
	}
}
