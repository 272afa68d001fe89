package outboxtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// destination is an HTTP endpoint that can be taken down for real: while down, its
// listener is closed and every dial is refused by the kernel.
type destination struct {
	h   http.Handler
	mu  sync.Mutex
	srv *httptest.Server
	url string
}

func newDestination(t *testing.T, h http.Handler) *destination {
	d := &destination{h: h}
	d.up()
	t.Cleanup(func() { d.down() })
	return d
}

// up starts the server (again: on a new port, which the handler reads from URL).
func (d *destination) up() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv = httptest.NewServer(d.h)
	d.url = d.srv.URL
}

// down closes the server; its address is left with nothing listening.
func (d *destination) down() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.srv != nil {
		d.srv.Close()
		d.srv = nil
	}
}

func (d *destination) URL() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.url
}

// An unreachable destination (connection refused, for 10× the whole retry budget)
// pauses delivery instead of giving events up: the breaker bounds the attempts spent
// to its probes, and when the destination is back every event is delivered.
func testProcessorOutageGivesNothingUp(t *testing.T, h Harness) {
	clock := NewClock(T0)
	var mu sync.Mutex
	received := map[string]bool{}
	dest := newDestination(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received[r.Header.Get("Idempotency-Key")] = true
		mu.Unlock()
	}))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	attempts := 0
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		attempts++
		mu.Unlock()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.URL(), strings.NewReader(`{}`))
		if err != nil {
			return err
		}
		req.Header.Set("Idempotency-Key", e.ID)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("post: %w", err) // wrapped, as a real client does: still unavailable
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	retry := outbox.RetryPolicy{Jitter: -1}
	p := newProcessor(t, h.Store, handler, outbox.Config{Clock: clock, Retry: retry, BatchSize: 10})
	const n = 20
	var evs []*outbox.Event
	for i := range n {
		evs = append(evs, event("t", fmt.Sprintf("e%02d", i), "u"))
	}
	mustEnqueue(t, h.Store, T0, evs...)

	dest.down()
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(dest.URL(), "http://"), time.Second); err == nil {
		t.Fatal("the destination still accepts connections after it was closed")
	}
	var budget time.Duration
	for i := 1; i < outbox.DefaultMaxAttempts; i++ {
		budget += retry.Delay(i)
	}
	outage := 10 * budget
	step := time.Second
	for clock.Now().Before(T0.Add(outage)) {
		if _, err := p.ProcessBatch(context.Background()); err != nil {
			t.Fatalf("ProcessBatch: %v", err)
		}
		clock.Advance(step)
	}
	st := p.Breaker()
	if !st.Open {
		t.Fatalf("after an outage of %s the circuit is closed: %+v", outage, st)
	}
	// The attempts of the outage: the breaker's threshold, then one per probe; the
	// cooldown doubles from 1s to at most 30s, so there are at most 6 probes in the
	// first minute and one per 30s after it.
	cfg := p.Config().Breaker
	maxProbes := 6 + int((outage-time.Minute)/cfg.MaxCooldown) + 1
	mu.Lock()
	spent := attempts
	mu.Unlock()
	if spent > cfg.Threshold+maxProbes {
		t.Fatalf("%d attempts during an outage of %s, over the threshold %d plus %d probes", spent, outage, cfg.Threshold, maxProbes)
	}
	for _, e := range evs {
		got := get(t, h.Store, e.ID)
		if got.GivenUp() || got.Attempts != 0 {
			t.Fatalf("%s after the outage: given up %v, attempts %d; want due, with its budget untouched", e.EntityID, got.GivenUp(), got.Attempts)
		}
	}
	hl, err := p.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rules := alertRules(hl); hl.Healthy || !slices.Contains(rules, outbox.RuleCircuitOpen) || slices.Contains(rules, outbox.RuleGivenUp) {
		t.Fatalf("health during the outage: %v; want circuit_open and no given_up", rules)
	}

	dest.up()
	for range 200 {
		clock.Advance(step)
		if _, err := p.ProcessBatch(context.Background()); err != nil {
			t.Fatalf("ProcessBatch: %v", err)
		}
		if s := stats(t, h.Store, outbox.StatsQuery{Now: clock.Now()}); s.Completed == n {
			break
		}
	}
	s := stats(t, h.Store, outbox.StatsQuery{Now: clock.Now()})
	mu.Lock()
	defer mu.Unlock()
	if s.Completed != n || s.GivenUp != 0 || len(received) != n {
		t.Fatalf("after the outage: %d completed, %d given up, %d received; want all %d delivered", s.Completed, s.GivenUp, len(received), n)
	}
	if p.Breaker().Open {
		t.Fatal("the circuit is still open after deliveries succeeded")
	}
	t.Logf("outage of %s: %d attempts spent (threshold %d, probes after it), %d events delivered after it",
		outage, spent, cfg.Threshold, n)
}
