package outboxtest

import (
	"bufio"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// AwaitLine reads the output of a server process a test started (a broker, say) until a
// line contains marker, and fails the test with what the process printed when none
// does within timeout. It keeps reading afterwards, so that the process never blocks
// on a full pipe.
func AwaitLine(t testing.TB, out io.Reader, marker string, timeout time.Duration) {
	t.Helper()
	ready := make(chan struct{})
	var (
		mu    sync.Mutex
		lines []string
	)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if strings.Contains(sc.Text(), marker) {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep the pipe drained
		}
	}()
	select {
	case <-ready:
	case <-time.After(timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no line with %q within %s; the process printed:\n%s", marker, timeout, strings.Join(lines, "\n"))
	}
}
