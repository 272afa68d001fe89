package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fitiq/outbox"
)

// daemon runs `outbox relay` in the background, as main does, until stop (the
// SIGINT/SIGTERM of a real process: Main's context ends).
type daemon struct {
	cancel context.CancelFunc
	done   chan result
}

func startRelay(t *testing.T, env Env, args ...string) *daemon {
	t.Helper()
	started := make(chan struct{})
	env.onStart = func() { close(started) }
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan result, 1)}
	go func() {
		var out, errb syncBuffer
		env.Stdout, env.Stderr = &out, &errb
		code := Main(ctx, append([]string{"relay"}, args...), env)
		d.done <- result{code, out.String(), errb.String()}
	}()
	select {
	case <-started:
	case r := <-d.done:
		t.Fatalf("relay exited at start: %v", r)
	}
	t.Cleanup(func() { cancel() })
	return d
}

func (d *daemon) stop(t *testing.T) result {
	t.Helper()
	d.cancel()
	select {
	case r := <-d.done:
		return r
	case <-time.After(time.Minute):
		t.Fatal("relay did not stop within a minute of its signal")
		return result{}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outcomes is a test observer: it counts outcomes and signals when n are in.
type outcomes struct {
	mu        sync.Mutex
	count     map[outbox.Result]int
	n         int
	all       chan struct{}
	claimed   chan struct{} // closed at the first claim
	claimOnce sync.Once
}

func newOutcomes(n int) *outcomes {
	return &outcomes{count: map[outbox.Result]int{}, n: n, all: make(chan struct{}), claimed: make(chan struct{})}
}

func (o *outcomes) ObserveClaim(int, time.Duration) { o.claimOnce.Do(func() { close(o.claimed) }) }

func (o *outcomes) ObserveDelivery(e outbox.Event, out outbox.Outcome, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.count[out.Result]++
	total := 0
	for _, c := range o.count {
		total += c
	}
	if total == o.n {
		close(o.all)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("gave up waiting for %s", what)
	}
}

// SIGINT/SIGTERM: the delivery in flight finishes and is recorded, the events claimed
// but not started are handed back (no attempt counted, no lease held), and the relay
// exits 0.
func TestRelaySignalDrains(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		store := migrated(t, b)
		var batch []*outbox.Event
		for i := range 10 {
			batch = append(batch, outbox.NewEvent("order.created", fmt.Sprintf("entry-%d", i), "alice"))
		}
		if err := store.Enqueue(context.Background(), time.Now(), batch...); err != nil {
			t.Fatal(err)
		}
		// The first request is held until the test releases it; any later one (started
		// before the stop took effect) is answered at once.
		inFlight := make(chan struct{})
		release := make(chan struct{})
		var first sync.Once
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			first.Do(func() {
				close(inFlight)
				<-release
			})
		}))
		defer srv.Close()

		d := startRelay(t, Env{}, "--dsn", b.dsn, "--sink", srv.URL, "--batch-size", "10", "--max-concurrent", "1", "--poll-interval", "1h")
		select {
		case <-inFlight:
		case <-time.After(time.Minute):
			t.Fatal("no delivery started")
		}
		d.cancel() // the signal
		// The delivery in flight is answered only after the signal: draining waits for it.
		close(release)
		r := d.stop(t)
		if r.code != 0 || !strings.Contains(r.stderr, "signal received: draining") || !strings.Contains(r.stderr, "relay stopped") {
			t.Fatalf("relay: %v", r)
		}
		events, err := store.List(context.Background(), outbox.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		completed, released := 0, 0
		for _, e := range events {
			switch {
			case e.Status == outbox.StatusCompleted:
				completed++
			case e.Status == outbox.StatusPending && e.Attempts == 0 && e.LeaseOwner == "" && len(e.Errors) == 0:
				released++
			default:
				t.Errorf("event %s left %s with %d attempts, lease %q, errors %v", e.ID, e.Status, e.Attempts, e.LeaseOwner, e.Errors)
			}
		}
		if completed < 1 || completed+released != 10 {
			t.Fatalf("%d completed, %d released; want the one in flight completed and the rest handed back", completed, released)
		}
	})
}

// /metrics after a relay run: the counters match what was delivered.
func TestMetricsAfterRelay(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	var events []*outbox.Event
	for i := range 30 {
		typ := "order.created"
		if i%3 == 0 {
			typ = "order.shipped"
		}
		events = append(events, outbox.NewEvent(typ, fmt.Sprintf("e-%d", i), "alice"))
	}
	for i := range 4 {
		events = append(events, outbox.NewEvent("rejected", fmt.Sprintf("r-%d", i), "alice"))
	}
	if err := store.Enqueue(context.Background(), time.Now(), events...); err != nil {
		t.Fatal(err)
	}
	// Events of type "rejected" go to a path that answers 400: given up at once.
	mux := http.NewServeMux()
	var got sync.Map
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Store(r.Header.Get("Idempotency-Key"), true)
		if bytes.Contains(body, []byte(`"type":"rejected"`)) {
			http.Error(w, "no such type", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	sinkSrv := httptest.NewServer(mux)
	defer sinkSrv.Close()

	obs := newOutcomes(len(events))
	addr := make(chan string, 1)
	env := Env{observer: obs, onListen: func(a string) { addr <- a }}
	d := startRelay(t, env, "--dsn", b.dsn, "--sink", sinkSrv.URL, "--metrics-addr", ":0", "--batch-size", "7", "--max-concurrent", "4", "--metrics-interval", "1h")
	metricsAt := <-addr
	if !strings.HasPrefix(metricsAt, "127.0.0.1:") {
		t.Fatalf("metrics listen on %s, want the loopback interface", metricsAt)
	}
	waitClosed(t, obs.all, "every event's outcome")

	resp, err := http.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		mf, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s with labels %v", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"outbox_events_delivered_total", map[string]string{"type": "order.created"}, 20},
		{"outbox_events_delivered_total", map[string]string{"type": "order.shipped"}, 10},
		{"outbox_events_given_up_total", map[string]string{"type": "rejected"}, 4},
		{"outbox_claimed_events_total", nil, 34},
		{"outbox_delivery_duration_seconds", map[string]string{"type": "order.created"}, 20},
		{"outbox_delivery_duration_seconds", map[string]string{"type": "rejected"}, 4},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := families["outbox_events_failed_total"]; ok {
		t.Errorf("failed (retrying) attempts were counted, but none failed retryably")
	}
	if value("outbox_claim_duration_seconds", nil) < 5 { // 34 events in batches of 7, then idle polls
		t.Errorf("claim duration histogram has too few samples")
	}
	// The gauges hold the refresh made at start, before any delivery (pending: all 34);
	// the next is an hour away.
	if g := value("outbox_events", map[string]string{"status": "pending"}); g != 34 {
		t.Errorf("pending gauge at start = %v, want 34", g)
	}
	if r := d.stop(t); r.code != 0 {
		t.Fatalf("relay: %v", r)
	}
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

// The built command, stopped with a real SIGTERM, drains and exits 0.
func TestBinaryExitsCleanlyOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := outboxBinary(t)
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "outbox.db")
	if out, err := exec.Command(bin, "migrate", "--dsn", dsn).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	cmd := exec.Command(bin, "relay", "--dsn", dsn, "--sink", srv.URL)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var log []string
	for sc.Scan() {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "relay started") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		log = append(log, sc.Text())
	}
	err := cmd.Wait()
	text := strings.Join(log, "\n")
	if err != nil || !strings.Contains(text, "signal received") || !strings.Contains(text, "relay stopped") {
		t.Fatalf("relay after SIGTERM: %v\n%s", err, text)
	}
}

// On PostgreSQL a commit anywhere wakes the relay (LISTEN/NOTIFY): with an hour's poll
// interval, an event enqueued after the start is delivered at once.
func TestRelayWokenByNotify(t *testing.T) {
	t.Parallel()
	b, ok := postgresBackend(t)
	if !ok {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping the relay's NOTIFY wake-up on PostgreSQL")
	}
	store := migrated(t, b)
	sink := newAcceptAll(t)
	obs := newOutcomes(1)
	d := startRelay(t, Env{observer: obs}, "--dsn", b.dsn, "--sink", sink.srv.URL, "--poll-interval", "1h")
	waitClosed(t, obs.claimed, "the relay's first (empty) cycle") // from now on it waits an hour, or for a wake-up
	e := outbox.NewEvent("order.created", "entry-1", "alice")
	if err := store.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, obs.all, "the delivery a NOTIFY should have triggered")
	if r := d.stop(t); r.code != 0 {
		t.Fatalf("relay: %v", r)
	}
	if sink.count() != 1 {
		t.Fatalf("sink received %d events", sink.count())
	}
}
