package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The outbox binary, built once for the package's tests that run it as a process of
// its own (a real SIGTERM, a relay in another process), and removed when they end.
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// outboxBinary returns the path of cmd/outbox built by `go build`, building it at the
// first call; it skips t when there is no go command to build with.
func outboxBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build cmd/outbox with: %v", err)
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "outbox-cli-test-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "outbox")
		if out, err := exec.Command(goBin, "build", "-o", built.path, "github.com/fitiq/outbox/cmd/outbox").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}
