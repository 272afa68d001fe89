package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// A poison head given up blocks its key; discarding it from the CLI unblocks the key,
// and the relay then delivers the events behind it, in order.
func TestDiscardPoisonHeadUnblocksItsKey(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		store := migrated(t, b)
		clock := outboxtest.NewClock(t0)
		ctx := context.Background()
		var evs []*outbox.Event
		for _, typ := range []string{"poison", "order.updated", "order.shipped"} {
			e := outbox.NewEvent(typ, "entry-9", "alice")
			e.OrderingKey = "entry-9"
			evs = append(evs, e)
		}
		if err := store.Enqueue(ctx, t0, evs...); err != nil {
			t.Fatal(err)
		}
		p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
			if e.Type == "poison" {
				return outbox.Permanent(errors.New("http 422: cannot parse"))
			}
			return nil
		}), outbox.Config{Clock: clock, Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		head, behind := evs[0], evs[1:]
		env := Env{Clock: clock}

		r := runEnv(t, env, "ls", "--dsn", b.dsn, "--blocked", "--json")
		var blocked []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &blocked); err != nil || r.code != 0 || len(blocked) != 2 ||
			blocked[0]["id"] != behind[0].ID || blocked[1]["id"] != behind[1].ID || blocked[0]["given_up"] != false {
			t.Fatalf("ls --blocked --json: %v %v", err, r)
		}
		r = runEnv(t, env, "show", "--dsn", b.dsn, head.ID, "--json")
		var shown map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown["given_up"] != true {
			t.Fatalf("show --json of the given-up head: %v %v", err, r)
		}

		// A bulk discard without --yes lists and deletes nothing.
		r = runEnv(t, env, "discard", "--dsn", b.dsn, "--given-up")
		if r.code != 1 || !strings.Contains(r.stdout, head.ID) || !strings.Contains(r.stderr, "add --yes") {
			t.Fatalf("discard --given-up without --yes: %v", r)
		}
		if _, err := store.Get(ctx, head.ID); err != nil {
			t.Fatalf("discard without --yes deleted the head: %v", err)
		}

		r = runEnv(t, env, "discard", "--dsn", b.dsn, head.ID)
		if r.code != 0 || r.stdout != "discarded 1 of 1 events\n" ||
			!strings.Contains(r.stderr, "event discarded") || !strings.Contains(r.stderr, "event_id="+head.ID) ||
			!strings.Contains(r.stderr, "http 422: cannot parse") {
			t.Fatalf("discard ID: %v", r)
		}
		if _, err := store.Get(ctx, head.ID); !errors.Is(err, outbox.ErrNotFound) {
			t.Fatalf("after discard, Get(head) = %v, want ErrNotFound", err)
		}
		if r := runEnv(t, env, "ls", "--dsn", b.dsn, "--blocked"); !strings.Contains(r.stdout, "no events match") {
			t.Fatalf("still blocked after the discard: %v", r)
		}

		var mu sync.Mutex
		var order []string
		sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			order = append(order, r.Header.Get("Idempotency-Key"))
			mu.Unlock()
		}))
		defer sink.Close()
		if r := runEnv(t, env, "relay", "--dsn", b.dsn, "--sink", sink.URL, "--once"); r.code != 0 {
			t.Fatalf("relay --once: %v", r)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(order, []string{behind[0].ID, behind[1].ID}) {
			t.Fatalf("delivered %v, want the two events behind the head, in order", order)
		}
	})
}

// Bulk discard with --yes deletes every given-up event, and logs each.
func TestDiscardGivenUpWithYes(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	clock := outboxtest.NewClock(t0)
	givenUpEvents(t, store, clock, 7)
	r := runEnv(t, Env{Clock: clock}, "discard", "--dsn", b.dsn, "--given-up", "--yes", "--batch-size", "3")
	if r.code != 0 || r.stdout != "discarded 7 events\n" || strings.Count(r.stderr, "event discarded") != 7 {
		t.Fatalf("discard --given-up --yes: %v", r)
	}
	if st, _ := store.Stats(context.Background(), outbox.StatsQuery{Now: clock.Now()}); st.Total != 0 {
		t.Fatalf("%d events left", st.Total)
	}
	if r := runEnv(t, Env{}, "discard", "--dsn", b.dsn, "--type", "x", outbox.NewEvent("t", "e", "").ID); r.code != 2 {
		t.Fatalf("--type with IDs: %v", r)
	}
}

// A stuck event is listed by ls --stuck and by stale.
func TestStuckEventsAreListed(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	e := outbox.NewEvent("t", "e", "u")
	if err := store.Enqueue(context.Background(), t0, e); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Claim(context.Background(), outbox.ClaimParams{Owner: "dead", Now: t0, LeaseUntil: t0.Add(30 * time.Second), Limit: 1}); err != nil {
		t.Fatal(err)
	}
	env := Env{Clock: outboxtest.NewClock(t0.Add(time.Hour))}
	if r := runEnv(t, env, "ls", "--dsn", b.dsn, "--stuck"); r.code != 0 || !strings.Contains(r.stdout, e.ID) {
		t.Fatalf("ls --stuck: %v", r)
	}
	if r := runEnv(t, env, "stale", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "no stale events") ||
		!strings.Contains(r.stdout, "1 stuck") || !strings.Contains(r.stdout, e.ID) {
		t.Fatalf("stale: %v", r)
	}
	if r := runEnv(t, env, "health", "--dsn", b.dsn); r.code != 1 || !strings.Contains(r.stdout, "stuck") {
		t.Fatalf("health with a stuck event: %v", r)
	}
}

// relay --once exits 1 when its deliveries failed.
func TestRelayOnceFailsWhenDeliveriesFail(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	if err := store.Enqueue(context.Background(), time.Now(), outbox.NewEvent("t", "e", "u")); err != nil {
		t.Fatal(err)
	}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
	}))
	defer sink.Close()
	r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--sink", sink.URL, "--once")
	if r.code != 1 || !strings.Contains(r.stderr, "1 of 1 delivery attempts failed") {
		t.Fatalf("relay --once against a failing sink: %v", r)
	}
}

// The relay serves /healthz and /readyz beside /metrics; it is not ready while its
// sink cannot be reached (the circuit is open).
func TestRelayHealthEndpoints(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close() // the sink refuses connections
	var evs []*outbox.Event
	for range 10 {
		evs = append(evs, outbox.NewEvent("t", "e", "u"))
	}
	if err := store.Enqueue(context.Background(), time.Now(), evs...); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	d := startRelay(t, Env{onListen: func(a string) { addr <- a }}, "--dsn", b.dsn, "--sink", closed,
		"--metrics-addr", "127.0.0.1:0", "--log-level", "error")
	base := "http://" + <-addr
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := get("/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "delivery held: destination unreachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q with the sink refusing connections", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not waiting out a backoff
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "outbox_circuit_open 1") {
		t.Fatalf("/metrics does not show the open circuit")
	}
	if r := d.stop(t); r.code != 0 {
		t.Fatalf("relay: %v", r)
	}
	for _, e := range evs {
		if got, _ := store.Get(context.Background(), e.ID); got.Attempts != 0 || got.GivenUp() {
			t.Fatalf("an event lost attempts to the outage: %+v", got)
		}
	}
}

func TestPurgeHelpShowsNoBogusDefault(t *testing.T) {
	t.Parallel()
	if r := runEnv(t, Env{}, "purge", "--help"); strings.Contains(r.stdout, "-1ns") {
		t.Fatalf("purge --help: %s", r.stdout)
	}
}
