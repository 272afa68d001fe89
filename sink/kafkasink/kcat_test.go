package kafkasink_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// A second reader, librdkafka's kcat, reads what the relay produced: every event once,
// with its key and Outbox-Id header. Skipped where kcat is not installed
// (apt-get install kcat).
func TestKcatReadsWhatTheRelayProduced(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install -y kcat): skipping the cross-check with librdkafka")
	}
	c := newCluster(t, 3, 3)
	store := sqlitetest.NewStore(t)
	const n = 500
	ids := enqueueKeyed(t, store, n, 20)
	p, err := outbox.NewProcessor(store, newSink(t, newClient(t, c), testTopic), outbox.Config{BatchSize: 100, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// -e: exit at the end of every partition; one line per record: key, then the header.
	cmd := exec.CommandContext(ctx, bin, "-C", "-b", strings.Join(c.ListenAddrs(), ","), "-t", testTopic,
		"-o", "beginning", "-e", "-q", "-f", "%k %h\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, stderr.String())
	}
	seen := map[string]int{}
	for line := range strings.Lines(string(out)) {
		key, headers, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(key, "key-") {
			t.Fatalf("record key %q in %q", key, line)
		}
		for h := range strings.SplitSeq(headers, ",") {
			if id, ok := strings.CutPrefix(h, "Outbox-Id="); ok {
				seen[id]++
			}
		}
	}
	checkIDsOnce(t, seen, ids)
}

func checkIDsOnce(t *testing.T, seen map[string]int, ids map[string]bool) {
	t.Helper()
	for id := range ids {
		if seen[id] != 1 {
			t.Fatalf("event %s read %d times by kcat (%d distinct IDs read)", id, seen[id], len(seen))
		}
	}
	if len(seen) != len(ids) {
		t.Fatalf("kcat read %d distinct IDs, want %d", len(seen), len(ids))
	}
}
