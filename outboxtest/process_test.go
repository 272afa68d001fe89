package outboxtest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and returns.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestAwaitLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, output, want string
	}{
		{"the marker comes", "starting\nlistening on 4222\nmore\n", ""},
		{"the output ends first", "starting\nbind: address already in use\n", "output ended without a line with \"listening\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &fatalRecorder{TB: t}
			// An hour: the ended output must be noticed at once, not at the timeout.
			AwaitLine(r, strings.NewReader(tc.output), "listening", time.Hour)
			if tc.want == "" && r.msg != "" || !strings.Contains(r.msg, tc.want) {
				t.Errorf("AwaitLine failed with %q, want %q", r.msg, tc.want)
			}
			if tc.want != "" && !strings.Contains(r.msg, "address already in use") {
				t.Errorf("the failure does not show what the process printed: %q", r.msg)
			}
		})
	}
}

func TestServerPortIsFreeAndBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	for range 20 {
		port := ServerPort(t)
		if port < 10_000 || port >= ephemeralStart() {
			t.Fatalf("port %d is outside [10000, %d)", port, ephemeralStart())
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		ln.Close()
	}
}
