package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// crashChildEnv, when set to a database path, turns the test binary into the child of
// TestCrashRecovery: a processor that claims a batch, reports each delivery it starts on
// stdout, and hangs in the middle of it until it is killed.
const crashChildEnv = "OUTBOX_SQLITE_CRASH_CHILD_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(runCrashChild(path))
	}
	os.Exit(m.Run())
}

func runCrashChild(path string) int {
	ctx := context.Background()
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hang := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		fmt.Printf("delivering %s\n", e.ID)
		<-ctx.Done() // mid-delivery, forever: the parent kills us here
		return ctx.Err()
	})
	p, err := outbox.NewProcessor(s, hang, outbox.Config{
		Owner: "doomed-relay", BatchSize: 10, MaxConcurrent: 3, HandlerTimeout: -1,
		LeaseDuration: time.Minute, Logger: outboxtest.Discard,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, _ = p.ProcessBatch(ctx)
	return 0
}

func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "crash.db")
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	const total = 25
	var events []*outbox.Event
	for i := range total {
		events = append(events, outbox.NewEvent("order.created", fmt.Sprintf("entry-%d", i), "u"))
	}
	if err := s.Enqueue(ctx, time.Now(), events...); err != nil {
		t.Fatal(err)
	}

	// The child claims a batch of 10 and hangs in its first 3 deliveries; kill it there.
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), crashChildEnv+"="+path)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for started := 0; started < 3; started++ {
		if !lines.Scan() {
			t.Fatalf("child exited after %d deliveries started: %v", started, lines.Err())
		}
		if !strings.HasPrefix(lines.Text(), "delivering ") {
			t.Fatalf("child said %q", lines.Text())
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}

	stuck, err := s.List(ctx, outbox.Filter{Status: outbox.StatusProcessing})
	if err != nil {
		t.Fatal(err)
	}
	if len(stuck) != 10 {
		t.Fatalf("%d events held by the killed relay, want its batch of 10", len(stuck))
	}
	for _, e := range stuck {
		if e.LeaseOwner != "doomed-relay" {
			t.Fatalf("event %s held by %q", e.EntityID, e.LeaseOwner)
		}
	}

	// A new processor, once the dead relay's lease has run out, delivers everything.
	clock := outboxtest.NewClock(time.Now().Add(time.Minute + time.Second))
	seen := map[string]int{}
	record := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		seen[e.ID]++
		return nil
	})
	p, err := outbox.NewProcessor(s, record, outbox.Config{Clock: clock, MaxConcurrent: 1, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != total {
		t.Fatalf("recovery drained %d, %v; want all %d", n, err, total)
	}
	st, err := s.Stats(ctx, outbox.StatsQuery{Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Completed != total || st.Processing != 0 || st.Pending != 0 || st.Failed != 0 || st.GivenUp != 0 {
		t.Fatalf("after recovery: %+v; want all %d completed, none left processing", st, total)
	}
	for _, e := range events {
		if seen[e.ID] != 1 {
			t.Fatalf("event %s delivered %d times after recovery", e.EntityID, seen[e.ID])
		}
	}
	for _, e := range stuck {
		got, err := s.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempts != 2 || len(got.Errors) != 1 || !strings.Contains(got.Errors[0].Error, "doomed-relay") {
			t.Fatalf("recovered event: attempts %d errors %+v; want the lost attempt recorded", got.Attempts, got.Errors)
		}
	}
}
