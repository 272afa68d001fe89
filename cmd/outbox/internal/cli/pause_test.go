package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// A relay in another process obeys a pause made from this one at its next claim, and
// delivers the paused type's events, in order, once it is resumed.
func TestPauseStopsAnotherProcessesRelayAndResumeLetsItThrough(t *testing.T) {
	t.Parallel()
	bin := outboxBinary(t)
	b := sqliteBackend(t)
	store := migrated(t, b)

	var (
		mu        sync.Mutex
		delivered []string
	)
	got := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			EntityID string `json:"entity_id"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &env)
		mu.Lock()
		delivered = append(delivered, env.EntityID)
		mu.Unlock()
		got <- struct{}{}
	}))
	defer srv.Close()

	if r := runEnv(t, Env{}, "pause", "--dsn", b.dsn, "--type", "a"); r.code != 0 || !strings.Contains(r.stdout, "paused a") {
		t.Fatalf("pause: %v", r)
	}
	relay := exec.Command(bin, "relay", "--dsn", b.dsn, "--sink", srv.URL, "--poll-interval", "50ms", "--max-concurrent", "1")
	stderr, _ := relay.StderrPipe()
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.Process.Signal(syscall.SIGTERM); _ = relay.Wait() }()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "relay started") {
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	ctx := context.Background()
	a1, a2, b1 := outbox.NewEvent("a", "a1", "u"), outbox.NewEvent("a", "a2", "u"), outbox.NewEvent("b", "b1", "u")
	a1.OrderingKey, a2.OrderingKey = "k", "k"
	if err := store.Enqueue(ctx, time.Now(), a1, a2, b1); err != nil {
		t.Fatal(err)
	}
	wait := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-got:
			case <-time.After(30 * time.Second):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("deliveries so far %v, want %d more", delivered, n)
			}
		}
	}
	wait(1)
	mu.Lock()
	if !slices.Equal(delivered, []string{"b1"}) { // a1 and a2 came first, and were passed over
		t.Fatalf("with a paused the relay delivered %v, want only b1", delivered)
	}
	mu.Unlock()
	if r := runEnv(t, Env{}, "stats", "--dsn", b.dsn); !strings.Contains(r.stdout, "paused: a (2 waiting") {
		t.Fatalf("stats does not report the paused backlog: %v", r)
	}
	if r := runEnv(t, Env{}, "health", "--dsn", b.dsn, "--stale-after", "1ns"); r.code != 0 || !strings.Contains(r.stdout, "paused: a (2 waiting, not alerted)") {
		t.Fatalf("health with a paused backlog: %v", r)
	}

	if r := runEnv(t, Env{}, "resume", "--dsn", b.dsn, "--type", "a"); r.code != 0 || !strings.Contains(r.stdout, "resumed a") {
		t.Fatalf("resume: %v", r)
	}
	wait(2)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(delivered, []string{"b1", "a1", "a2"}) {
		t.Fatalf("after resume delivered %v, want b1 then a1, a2 in order", delivered)
	}
}

func TestPauseAndResumeRefuseBadInput(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	migrated(t, b)
	for _, args := range [][]string{
		{"pause", "--dsn", b.dsn, "--type", ""},
		{"pause", "--dsn", b.dsn, "--type", strings.Repeat("x", 300)},
		{"resume", "--dsn", b.dsn},
		{"pause", "--dsn", b.dsn, "extra"},
	} {
		if r := runEnv(t, Env{}, args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d\n%v", args, r.code, ExitUsage, r)
		}
	}
	if r := runEnv(t, Env{}, "pause", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "no type is paused") {
		t.Fatalf("pause without --type lists: %v", r)
	}
	if r := runEnv(t, Env{}, "resume", "--dsn", b.dsn, "--type", "x"); r.code != 0 || !strings.Contains(r.stdout, "x was not paused") {
		t.Fatalf("resume of a type not paused: %v", r)
	}
}
