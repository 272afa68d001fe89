package cli

import (
	"strings"
	"testing"
)

// --trace prints one synced entry's trace: the save at the root, its event's create
// span under it, the delivery attempts under that, and the backend's handling under
// the attempt that reached it.
func TestDemoTracePrintsOneEntrysSpanTree(t *testing.T) {
	t.Parallel()
	r := run(t, "demo", "--quick", "--trace")
	if r.code != exitOK {
		t.Fatalf("fitiq demo --quick --trace exited %d\n%s%s", r.code, r.out, r.errOut)
	}
	_, tree, ok := strings.Cut(r.out, "One entry's trace (--trace)")
	if !ok {
		t.Fatalf("no trace printed:\n%s", r.out)
	}
	lines := strings.Split(strings.TrimSpace(tree), "\n")[1:] // after the heading
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "trace ") {
		t.Fatalf("trace too short:\n%s", tree)
	}
	depth := func(l string) int { return strings.IndexFunc(l, func(r rune) bool { return r >= 'A' && r <= 'z' }) }
	if !strings.HasPrefix(lines[1], "save ") || !strings.Contains(lines[1], "internal") {
		t.Errorf("root is not the save: %q", lines[1])
	}
	if !strings.Contains(lines[2], "└─ create ") || !strings.Contains(lines[2], "producer") {
		t.Errorf("second line is not the create span under the save: %q", lines[2])
	}
	delivered, served := -1, false
	for i, l := range lines[3:] {
		if strings.Contains(l, "deliver ") {
			if depth(l) <= depth(lines[2]) || !strings.Contains(l, "consumer attempt=") {
				t.Errorf("attempt line not under the create span: %q", l)
			}
			if strings.Contains(l, "outcome=delivered") {
				delivered = i
			}
		}
		if delivered >= 0 && i > delivered && strings.Contains(l, "server status=") && depth(l) > depth(lines[3+delivered]) {
			served = true
		}
	}
	if delivered < 0 || !served {
		t.Errorf("want a delivered attempt with the backend's server span under it:\n%s", tree)
	}
}
