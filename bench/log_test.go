package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

func TestOutboxEventKeyedByEntity(t *testing.T) {
	o := newOrder(3, 7)
	plain, keyed := outboxEvent(o, false), outboxEvent(o, true)
	if plain.OrderingKey != "" {
		t.Errorf("unkeyed event has ordering key %q", plain.OrderingKey)
	}
	if keyed.OrderingKey != o.ID.String() || keyed.EntityID != o.ID.String() {
		t.Errorf("keyed event: ordering key %q, entity %q; want both %q", keyed.OrderingKey, keyed.EntityID, o.ID)
	}
	if string(keyed.Payload) != string(o.payload()) || keyed.UserID != o.UserID {
		t.Errorf("keyed event carries %s for %s, want %s for %s", keyed.Payload, keyed.UserID, o.payload(), o.UserID)
	}
}

func TestBatchReceiverAcceptsEveryEvent(t *testing.T) {
	var got []string
	var h outbox.BatchHandler = batchReceiver{deliver: func(id string) { got = append(got, id) }}
	errs := h.HandleBatch(context.Background(), []outbox.Event{{ID: "a"}, {ID: "b"}, {ID: "c"}})
	if len(errs) != 3 || slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		t.Fatalf("HandleBatch of 3 returned %v, want 3 nil errors", errs)
	}
	if err := h.Handle(context.Background(), outbox.Event{ID: "d"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("delivered %v, want a b c d", got)
	}
}

// fakeCursor serves batches in turn and records the calls made to it.
type fakeCursor struct {
	batches [][]string
	limits  []int
	acked   int
	ackErr  error
	log     *[]string
}

func (c *fakeCursor) Read(_ context.Context, limit int) (*postgres.LogBatch, error) {
	c.limits = append(c.limits, limit)
	b := &postgres.LogBatch{}
	if len(c.limits) <= len(c.batches) {
		for _, id := range c.batches[len(c.limits)-1] {
			b.Events = append(b.Events, postgres.LogEvent{Event: outbox.Event{ID: id}})
		}
	}
	return b, nil
}

func (c *fakeCursor) Ack(context.Context, *postgres.LogBatch) error {
	if c.ackErr != nil {
		return c.ackErr
	}
	c.acked++
	*c.log = append(*c.log, "ack")
	return nil
}

func TestReadAllAcksBeforeItDeliversAndStopsWhenEmpty(t *testing.T) {
	var log []string
	c := &fakeCursor{batches: [][]string{{"a", "b"}, {"c"}}, log: &log}
	if err := readAll(context.Background(), c, 2, func(id string) { log = append(log, id) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ack", "a", "b", "ack", "c"}; !slices.Equal(log, want) {
		t.Fatalf("calls %v, want %v", log, want)
	}
	if !slices.Equal(c.limits, []int{2, 2, 2}) {
		t.Fatalf("reads of %v, want three of 2 (the last one empty)", c.limits)
	}

	moved := errors.New("moved")
	log = nil
	c = &fakeCursor{batches: [][]string{{"a"}}, ackErr: moved, log: &log}
	if err := readAll(context.Background(), c, 2, func(id string) { log = append(log, id) }); !errors.Is(err, moved) {
		t.Fatalf("readAll with a failing ack = %v, want %v", err, moved)
	}
	if len(log) != 0 {
		t.Fatalf("delivered %v of a batch whose ack failed", log)
	}
}

// testLogSystem is the log system of that name (log: Log.Transact; log-tx: the
// caller's transaction) in a schema of its own, in the database of OUTBOX_POSTGRES_DSN;
// the test is skipped without it.
func testLogSystem(t *testing.T, name string) *logSystem {
	t.Helper()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: the log system's end-to-end test needs PostgreSQL")
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	schema := "bench_test_log_" + hex.EncodeToString(suffix)
	s, err := openLog(context.Background(), dsn, name, schema, name == "log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dropSchema(context.Background(), s.pool, schema); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		s.Close()
	})
	return s
}

// TestLogSystemDrainsEveryEventOnce runs each log consumer of the drain phase over a
// backlog that is not a whole number of batches: the receiver sees every event once,
// and nothing moves to the failures table.
func TestLogSystemDrainsEveryEventOnce(t *testing.T) {
	t.Parallel()
	s := testLogSystem(t, "log-tx")
	ctx := context.Background()
	const n = 2345
	specs, err := parseSpecs("log-relay:b=1000;log-relay:b=1000,c=100;log-relay:b=1000,o=1;log-limit:b=1000")
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		t.Run(sp.V.Label, func(t *testing.T) {
			if err := s.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Preload(ctx, sp.V, n); err != nil {
				t.Fatal(err)
			}
			var rows, keyed int
			if err := s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE ordering_key = entity_id) FROM outbox_log`).Scan(&rows, &keyed); err != nil {
				t.Fatal(err)
			}
			if wantKeyed := map[bool]int{true: n}[sp.V.Keyed]; rows != n || keyed != wantKeyed {
				t.Fatalf("backlog: %d rows, %d keyed by entity; want %d, %d", rows, keyed, n, wantKeyed)
			}
			rec := newRecorder(n)
			stop, err := s.Consume(ctx, sp.V, rec.deliver)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-rec.done:
			case <-time.After(time.Minute): // a guard against a hang, not a timing
				got, _ := rec.counts()
				t.Errorf("%d of %d events delivered after a minute", got, n)
			}
			stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := stop(stopCtx); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if got, dups := rec.counts(); got != n || dups != 0 {
				t.Fatalf("delivered %d events (%d twice), want %d once", got, dups, n)
			}
			var moved int
			if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM outbox_events`).Scan(&moved); err != nil {
				t.Fatal(err)
			}
			if moved != 0 {
				t.Fatalf("%d events moved to the failures table, want none", moved)
			}
		})
	}
}

// TestLogSystemEnqueueAndLatency runs the enqueue and latency phases' code on both log
// systems: every transaction writes its business row and its event together (in
// Log.Transact, or in a transaction of the harness), and the relay at its defaults
// delivers every event committed meanwhile.
func TestLogSystemEnqueueAndLatency(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"log", "log-tx"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := testLogSystem(t, name)
			ctx := context.Background()
			// log enqueues through Log.Transact (which wakes the relay after its commit);
			// log-tx leaves the transaction to the harness.
			if ok, err := s.Transact(ctx, func(pgx.Tx) error { return nil }); err != nil || ok != (name == "log") {
				t.Fatalf("Transact: ok %v, err %v; want ok %v", ok, err, name == "log")
			}
			o := options{writers: 2, enqueueWarm: 50 * time.Millisecond, enqueueTime: 500 * time.Millisecond,
				latencyWarm: 50 * time.Millisecond, latencyTime: 500 * time.Millisecond}
			r, err := measureEnqueue(ctx, s, o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Phase != "Enqueue" || r.Label != name {
				t.Fatalf("enqueue result %s/%s, want Enqueue/%s", r.Phase, r.Label, name)
			}
			var orders, events int
			if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox_log)`).Scan(&orders, &events); err != nil {
				t.Fatal(err)
			}
			if orders != events {
				t.Fatalf("after enqueue: %d orders, %d events; want one event per order", orders, events)
			}
			t.Logf("enqueue committed %d transactions", orders)

			// 40 events/s for 0.5 s: the Poisson writer writes none with probability e^-20.
			lat, err := measureLatency(ctx, s, 40, o)
			if err != nil {
				t.Fatal(err)
			}
			if lat.Label != name || lat.N != len(lat.samples) || lat.N == 0 {
				t.Fatalf("latency result %s with %d samples (%d kept), want %s with some", lat.Label, lat.N, len(lat.samples), name)
			}
		})
	}
}
