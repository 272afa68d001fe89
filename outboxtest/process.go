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
// does within timeout, or as soon as the output ends without one (the process exited: a
// port taken, a bad flag). It keeps reading afterwards, so that the process never blocks
// on a full pipe.
func AwaitLine(t testing.TB, out io.Reader, marker string, timeout time.Duration) {
	t.Helper()
	ready, ended := make(chan struct{}), make(chan struct{})
	var (
		mu    sync.Mutex
		lines []string
	)
	go func() {
		seen := false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if strings.Contains(sc.Text(), marker) {
				seen = true
				close(ready)
				break
			}
		}
		if !seen {
			close(ended)
		}
		for sc.Scan() { // keep the pipe drained
		}
	}()
	select {
	case <-ready:
	case <-ended:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the process's output ended without a line with %q; it printed:\n%s", marker, strings.Join(lines, "\n"))
	case <-time.After(timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no line with %q within %s; the process printed:\n%s", marker, timeout, strings.Join(lines, "\n"))
	}
}
