package mysql_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

// The multi-process tests re-run this test binary as relay processes: TestMain sees
// relayEnv and runs runRelay instead of the tests.
const relayEnv = "OUTBOX_MYSQL_TEST_RELAY"

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
	Seq            int64     `json:"seq"`
	Key            string    `json:"key"`
	Relay          string    `json:"relay"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	At             time.Time `json:"at"` // when the relay handed it over
}

// relayDB opens the relay's pool with the settings the CLI uses: parameters
// interpolated on the client, one round trip per statement.
func relayDB(dsn string, maxConns int) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.InterpolateParams = true
	c, err := gomysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(maxConns)
	return db, nil
}

// runRelay is one relay process: a processor on the table named by the environment,
// delivering in batches to the receiver's URL, until SIGTERM (or SIGKILL).
func runRelay() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	name := os.Getenv(relayEnv)
	batch, _ := strconv.Atoi(os.Getenv("RELAY_BATCH"))
	lease, _ := time.ParseDuration(os.Getenv("RELAY_LEASE"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := relayDB(os.Getenv("OUTBOX_MYSQL_DSN"), 4)
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	defer db.Close()
	s, err := mysql.New(context.Background(), db, mysql.Config{Table: os.Getenv("RELAY_TABLE"), Logger: log})
	if err != nil {
		log.Error("relay", "err", err)
		return 2
	}
	defer s.Close()
	p, err := outbox.NewProcessor(s, &receiverClient{url: os.Getenv("RELAY_RECEIVER"), relay: name},
		outbox.Config{Owner: name, BatchSize: batch, MaxConcurrent: batch, LeaseDuration: lease,
			PollInterval: 200 * time.Millisecond, Logger: log})
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
		ds[i] = delivery{ID: e.ID, Seq: e.Seq, Key: e.OrderingKey, Relay: c.relay, LeaseExpiresAt: e.LeaseExpiresAt, At: time.Now()}
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

// receiver records every delivery, checks that each ordering key arrives in seq
// order (a redelivery of the same event aside), and says when all of want have
// arrived and when `when` distinct events have.
type receiver struct {
	mu         sync.Mutex
	deliveries map[string][]delivery
	lastOfKey  map[string]int64
	outOfOrder []string
	want, when int
	all, half  chan struct{}
}

func newReceiver(want, when int) *receiver {
	return &receiver{deliveries: map[string][]delivery{}, lastOfKey: map[string]int64{},
		want: want, when: when, all: make(chan struct{}), half: make(chan struct{})}
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
		if d.Key != "" {
			if last := r.lastOfKey[d.Key]; d.Seq < last {
				r.outOfOrder = append(r.outOfOrder, fmt.Sprintf("key %s: seq %d delivered by %s after seq %d", d.Key, d.Seq, d.Relay, last))
			}
			r.lastOfKey[d.Key] = d.Seq
		}
	}
	for _, c := range []struct {
		n  int
		ch chan struct{}
	}{{r.want, r.all}, {r.when, r.half}} {
		if len(r.deliveries) >= c.n {
			select {
			case <-c.ch:
			default:
				close(c.ch)
			}
		}
	}
}

func (r *receiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.deliveries)
}

// enqueueKeyed writes n events in batches of 1,000; every fourth has one of 500
// ordering keys.
func enqueueKeyed(tb testing.TB, s *mysql.Store, n int) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			e := outbox.NewEvent("order.created", fmt.Sprintf("e-%d", i), fmt.Sprintf("user-%d", i%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			if i%4 == 0 {
				e.OrderingKey = fmt.Sprintf("key-%d", i%500)
			}
			batch = append(batch, e)
		}
		if err := s.Enqueue(ctx, time.Now(), batch...); err != nil {
			tb.Fatal(err)
		}
	}
}

// Relay processes (separate OS processes, each with its own pool) drain one outbox
// into a recording receiver. Once a third of the events have arrived, one relay is
// killed with SIGKILL, holding a batch under its lease; the others take its events
// over when the lease runs out, each recording the lost attempt (unless the killed
// relay's last settle was already on the server, and completes them). Every event is
// delivered, none twice while a relay's lease on it was valid, and each ordering key
// in seq order. OUTBOX_MYSQL_RELAY_EVENTS sets the number of events: 10,000 by
// default (CI), 50,000 for the size.
func TestRelayProcessesDrainOneOutboxAndTakeOverAKilledOne(t *testing.T) {
	t.Parallel()
	events := 10_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_MYSQL_RELAY_EVENTS")); err == nil && v > 0 {
		events = v
	}
	const relays, lease = 4, 3 * time.Second
	db := openDB(t, 4, nil)
	s := newStore(t, db, mysql.Config{})
	enqueueKeyed(t, s, events)
	rec := newReceiver(events, events/3)
	srv := httptest.NewServer(rec)
	defer srv.Close()

	start := time.Now()
	procs := make([]*exec.Cmd, relays)
	for i := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			relayEnv+"="+fmt.Sprintf("relay-%d", i),
			"RELAY_TABLE="+s.Config().Table,
			"RELAY_RECEIVER="+srv.URL,
			"RELAY_BATCH=200",
			"RELAY_LEASE="+lease.String(),
		)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = cmd
	}
	defer func() {
		for _, cmd := range procs[1:] {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		for i, cmd := range procs[1:] {
			if err := cmd.Wait(); err != nil {
				t.Errorf("relay-%d: %v", i+1, err)
			}
		}
	}()

	select {
	case <-rec.half:
	case <-time.After(3 * time.Minute): // generous: a busy machine must not fail it
		t.Fatalf("%d of %d events delivered within 3 minutes", rec.delivered(), events)
	}
	if err := procs[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := procs[0].Wait(); err == nil {
		t.Fatal("relay-0 survived SIGKILL")
	}
	killedAt := time.Now()
	// What relay-0 held when it died. A settle it had sent may still commit after the
	// kill (the server finishes a statement before it notices the closed connection):
	// those events are completed by relay-0 after all, delivered once, and lose nothing.
	held := heldBy(t, db, s, "relay-0")
	t.Logf("relay-0 killed after %d deliveries, holding %d events", rec.delivered(), len(held))

	select {
	case <-rec.all:
	case <-time.After(3 * time.Minute):
		t.Fatalf("%d of %d events delivered within 3 minutes", rec.delivered(), events)
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
		if time.Since(start) > 6*time.Minute {
			t.Fatalf("stats %+v: not all %d completed", st, events)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	perRelay := map[string]int{}
	takenOver := 0
	for id, ds := range rec.deliveries {
		perRelay[ds[0].Relay]++
		for i := 1; i < len(ds); i++ {
			if prev := ds[i-1]; ds[i].At.Before(prev.LeaseExpiresAt) {
				t.Errorf("event %s delivered by %s at %s while %s's lease ran until %s",
					id, ds[i].Relay, ds[i].At.Format(time.RFC3339Nano), prev.Relay, prev.LeaseExpiresAt.Format(time.RFC3339Nano))
			}
			if ds[i-1].Relay == "relay-0" && ds[i].At.After(killedAt) {
				takenOver++
			}
		}
	}
	for _, msg := range rec.outOfOrder {
		t.Error(msg)
	}
	if len(rec.deliveries) != events {
		t.Fatalf("%d distinct events delivered, want %d", len(rec.deliveries), events)
	}
	// Every event relay-0 held that another relay then delivered records relay-0's
	// attempt as lost.
	takenFromHeld, unrecorded := 0, 0
	for _, id := range held {
		ds := rec.deliveries[id.String()]
		if !slices.ContainsFunc(ds, func(d delivery) bool { return d.Relay != "relay-0" }) {
			continue // completed by relay-0's settle that was in flight when it died
		}
		takenFromHeld++
		if !recordsLostAttempt(t, db, s, id) {
			unrecorded++
		}
	}
	if unrecorded > 0 {
		t.Errorf("%d of the %d events taken over from relay-0 record no lost attempt", unrecorded, takenFromHeld)
	}
	t.Logf("of the %d events relay-0 held, %d were taken over and %d completed by its last settle, committed after the kill",
		len(held), takenFromHeld, len(held)-takenFromHeld)
	t.Logf("%d relay processes (one killed) drained %d events in %s (%.0f events/s); per relay %v; %d of relay-0's deliveries made again after it died",
		relays, events, elapsed.Round(time.Millisecond), float64(events)/elapsed.Seconds(), perRelay, takenOver)
}

// heldBy returns the IDs of the events owner holds under a lease.
func heldBy(t *testing.T, db *sql.DB, s *mysql.Store, owner string) []uuid.UUID {
	t.Helper()
	rows, err := db.Query("SELECT id FROM `"+s.Config().Table+"` WHERE status = 'processing' AND lease_owner = ?", owner)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []uuid.UUID
	for rows.Next() {
		var raw []byte // BINARY(16)
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		id, err := uuid.FromBytes(raw)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// recordsLostAttempt reports whether the event id was completed with an earlier
// attempt recorded as lost.
func recordsLostAttempt(t *testing.T, db *sql.DB, s *mysql.Store, id uuid.UUID) bool {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM `"+s.Config().Table+"` WHERE id = ? AND status = 'completed' AND attempts >= 2 AND JSON_LENGTH(errors) >= 1", id[:]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}
