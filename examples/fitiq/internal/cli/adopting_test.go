package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every sh block of docs/adopting.md, run in order with the binaries built from this
// tree, against a real backend: the page's commands work as written.
func TestAdoptingPageCommandsRun(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the binaries with: %v", err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("no bash to run the page's commands with: %v", err)
	}
	page, err := os.ReadFile("../../../../docs/adopting.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(page), -1)
	if len(blocks) < 3 {
		t.Fatalf("docs/adopting.md has %d sh blocks; want one per phase at least", len(blocks))
	}

	bin := t.TempDir() // both binaries, built by one go command (it links them side by side)
	if out, err := exec.Command(goBin, "build", "-o", bin+string(os.PathSeparator),
		"github.com/fitiq/outbox/cmd/outbox", "github.com/fitiq/outbox/examples/fitiq/cmd/fitiq").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	url, token := startBackend(t, "alice")
	db := filepath.Join(t.TempDir(), "fitiq.db")
	env := append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FITIQ_DB="+db, "FITIQ_USER=alice", "FITIQ_API_URL="+url, "FITIQ_TOKEN="+token,
		"OUTBOX_DSN=sqlite:"+db)
	var transcript strings.Builder
	for i, b := range blocks {
		cmd := exec.Command(bash, "-euo", "pipefail", "-c", "set -x\n"+b[1])
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		transcript.Write(out)
		if err != nil {
			t.Fatalf("sh block %d of docs/adopting.md failed: %v\n%s", i+1, err, transcript.String())
		}
	}
	log := transcript.String()
	t.Logf("%s", log)
	for _, want := range []string{
		"shadow run: 2 events compared with the backend, 0 differences",
		"paused physicalAttribute",
		"(1 waiting, not alerted)",
		"resumed physicalAttribute",
		"all synced",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the page's commands did not print %q:\n%s", want, log)
		}
	}
}
