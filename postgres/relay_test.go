package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The multi-process test re-runs this test binary as relay processes: TestMain sees
// relayEnv and runs runRelay instead of the tests.
const relayEnv = "OUTBOX_PG_TEST_RELAY"

func TestMain(m *testing.M) {
	if os.Getenv(relayEnv) != "" {
		os.Exit(runRelay())
	}
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

// delivery is what a relay tells the recording receiver about one event it delivers.
type delivery struct {
	ID             string    `json:"id"`
	Relay          string    `json:"relay"`
	Attempt        int       `json:"attempt"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	At             time.Time `json:"at"` // when the relay handed it over
}

// runRelay is one relay process: a processor on the table named by the environment,
// delivering in batches to the receiver's URL, until SIGTERM.
func runRelay() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	name := os.Getenv(relayEnv)
	batch, _ := strconv.Atoi(os.Getenv("RELAY_BATCH"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := pgxpool.ParseConfig(os.Getenv("OUTBOX_POSTGRES_DSN"))
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	cfg.MaxConns = 3
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	defer pool.Close()
	s, err := postgres.New(context.Background(), pool, postgres.Config{Schema: os.Getenv("RELAY_SCHEMA"), Logger: log})
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	defer s.Close()
	p, err := outbox.NewProcessor(s, &receiverClient{url: os.Getenv("RELAY_RECEIVER"), relay: name},
		outbox.Config{Owner: name, BatchSize: batch, Logger: log})
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	if err := p.Start(context.Background()); err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(stopCtx); err != nil {
		log.Error("relay: stop", "err", err)
		return 1
	}
	return 0
}

// receiverClient delivers a batch in one POST to the recording receiver.
type receiverClient struct {
	url, relay string
}

func (c *receiverClient) Handle(ctx context.Context, e outbox.Event) error {
	return c.HandleBatch(ctx, []outbox.Event{e})[0]
}

func (c *receiverClient) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	ds := make([]delivery, len(events))
	for i, e := range events {
		ds[i] = delivery{ID: e.ID, Relay: c.relay, Attempt: e.Attempts, LeaseExpiresAt: e.LeaseExpiresAt, At: time.Now()}
	}
	body, _ := json.Marshal(ds)
	errs := make([]error, len(events))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("receiver: %s", resp.Status)
			}
		}
	}
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// receiver records every delivery, and says when all of want have arrived.
type receiver struct {
	mu         sync.Mutex
	deliveries map[string][]delivery
	want       int
	all        chan struct{}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var ds []delivery
	if err := json.NewDecoder(req.Body).Decode(&ds); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		r.deliveries[d.ID] = append(r.deliveries[d.ID], d)
	}
	if len(r.deliveries) == r.want {
		select {
		case <-r.all:
		default:
			close(r.all)
		}
	}
}

// Relay processes (separate OS processes, each with its own pool and LISTEN
// connection) drain one outbox into a recording receiver: every event is delivered,
// and none twice while a relay's lease on it was valid. The throughput of one relay
// and of four is logged; OUTBOX_PG_RELAY_EVENTS changes the number of events: 10,000 by
// default (CI; what is checked holds at any size), 50,000 for the size.
func TestRelayProcessesDrainOneOutbox(t *testing.T) {
	t.Parallel()
	events := 10_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_PG_RELAY_EVENTS")); err == nil && v > 0 {
		events = v
	}
	for _, relays := range []int{1, 4} {
		t.Run(fmt.Sprintf("relays=%d", relays), func(t *testing.T) {
			rate := drainWithRelays(t, relays, events)
			t.Logf("%d relay processes drained %d events at %.0f events/s", relays, events, rate)
		})
	}
}

func drainWithRelays(t *testing.T, relays, events int) float64 {
	pool := newPool(t, 4, "")
	s := newStore(t, pool, postgres.Config{})
	enqueueN(t, s, events, "e")
	rec := &receiver{deliveries: map[string][]delivery{}, want: events, all: make(chan struct{})}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	start := time.Now()
	var procs []*exec.Cmd
	for i := range relays {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(),
			relayEnv+"="+fmt.Sprintf("relay-%d", i),
			"RELAY_SCHEMA="+s.Config().Schema,
			"RELAY_RECEIVER="+srv.URL,
			"RELAY_BATCH=500",
		)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	defer func() {
		for _, cmd := range procs {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		for i, cmd := range procs {
			if err := cmd.Wait(); err != nil {
				t.Errorf("relay-%d: %v", i, err)
			}
		}
	}()

	select {
	case <-rec.all:
	case <-time.After(3 * time.Minute): // generous: a busy machine must not fail it
		rec.mu.Lock()
		n := len(rec.deliveries)
		rec.mu.Unlock()
		t.Fatalf("%d of %d events delivered within 3 minutes", n, events)
	}
	// Delivered; now wait for the relays to record it.
	ctx := context.Background()
	for {
		st, err := s.Stats(ctx, outbox.StatsQuery{Now: time.Now(), StaleAfter: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if st.Completed == events {
			break
		}
		if time.Since(start) > 4*time.Minute {
			t.Fatalf("stats %+v: not all %d completed", st, events)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	perRelay := map[string]int{}
	for id, ds := range rec.deliveries {
		perRelay[ds[0].Relay]++
		for i := 1; i < len(ds); i++ {
			if prev := ds[i-1]; ds[i].At.Before(prev.LeaseExpiresAt) {
				t.Errorf("event %s delivered by %s at %s while %s's lease ran until %s",
					id, ds[i].Relay, ds[i].At.Format(time.RFC3339Nano), prev.Relay, prev.LeaseExpiresAt.Format(time.RFC3339Nano))
			}
		}
	}
	if len(rec.deliveries) != events {
		t.Fatalf("%d distinct events delivered, want %d", len(rec.deliveries), events)
	}
	t.Logf("deliveries per relay: %v", perRelay)
	return float64(events) / elapsed.Seconds()
}
