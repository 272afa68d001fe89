package redissink_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/redissink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	u := os.Getenv("OUTBOX_REDIS_URL")
	if u == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the test against Redis (e.g. OUTBOX_REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("OUTBOX_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// prefix returns a key prefix of the test's own and deletes every key under it when the
// test ends (the shared Redis keeps nothing of ours).
func prefix(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	p := "outboxtest." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	t.Cleanup(func() {
		ctx := context.Background()
		for _, pattern := range []string{p + "*", "{" + p + "*"} {
			iter := rdb.Scan(ctx, 0, pattern, 100).Iterator()
			for iter.Next(ctx) {
				rdb.Del(ctx, iter.Val())
			}
		}
	})
	return p
}

func newSink(t *testing.T, rdb redis.UniversalClient, cfg redissink.Config) *redissink.Sink {
	t.Helper()
	s, err := redissink.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readAll returns how often each event ID occurs in the streams, checking that each
// entry's envelope carries the same ID.
func readAll(t *testing.T, rdb *redis.Client, streams ...string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, st := range streams {
		msgs, err := rdb.XRange(context.Background(), st, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			id, _ := m.Values[redissink.FieldID].(string)
			env, err := envelope(m.Values)
			if err != nil || env.ID != id {
				t.Fatalf("entry %s: envelope %v (%v) does not carry its ID %q", m.ID, m.Values, err, id)
			}
			seen[id]++
		}
	}
	return seen
}

// envelope decodes an entry's envelope field.
func envelope(values map[string]any) (sink.Envelope, error) {
	var env sink.Envelope
	s, _ := values[redissink.FieldEnvelope].(string)
	err := json.Unmarshal([]byte(s), &env)
	return env, err
}

func checkExactlyOnce(t *testing.T, seen map[string]int, ids map[string]bool) {
	t.Helper()
	missing, dup := 0, 0
	for id := range ids {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing > 0 || dup > 0 || len(seen) != len(ids) {
		t.Fatalf("of %d events: %d missing, %d more than once, %d entries not from an event", len(ids), missing, dup, len(seen)-len(ids)+missing)
	}
}

// The streams EnqueueN's events go to under the template prefix.{type}.
func streamsOf(t *testing.T, rdb *redis.Client, p string) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), p+".*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// Thousands of events to Redis, each added once; delivered again, as by a relay that died
// before recording its outcomes, Redis adds none. (2,000: four batches of 500 and two
// redeliveries of 1,000; what it checks holds at any size. It was 10,000, and the SQLite
// outbox under -race, not Redis, took most of its time.)
func TestThousandsOfEventsExactlyOnceAndRedeliveryRefused(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := prefix(t, rdb)
	store := sqlitetest.NewStore(t)
	const n = 2_000
	ids := outboxtest.EnqueueN(t, store, n)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	proc, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 500, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	stats, err := proc.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n {
		t.Fatalf("completed %d of %d (stats %+v)", stats.Completed, n, stats)
	}
	streams := streamsOf(t, rdb, p)
	checkExactlyOnce(t, readAll(t, rdb, streams...), ids)

	// Deliver every event again, as a relay that died before recording its outcomes
	// would: each succeeds, and Redis adds none.
	all, err := store.List(context.Background(), outbox.Filter{Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	for start := 0; start < len(all); start += 1000 {
		for i, err := range s.HandleBatch(context.Background(), all[start:min(start+1000, len(all))]) {
			if err != nil {
				t.Fatalf("redelivery of event %d: %v", start+i, err)
			}
		}
	}
	checkExactlyOnce(t, readAll(t, rdb, streams...), ids)
}

// Why the sink does not derive entry IDs from Event.Seq: Redis refuses an ID below the
// stream's last one, so an event retried (or outranked by a higher priority) after a
// later event was added would be refused as though it were a repeat, and lost.
func TestSequenceIDsWouldRefuseARetriedEvent(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	stream := prefix(t, rdb) + ".seq"
	ctx := context.Background()
	// Seq 7 is delivered while seq 5 fails; then seq 5 is retried.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: "7-0", Values: []any{"id", "event-7"}}).Err(); err != nil {
		t.Fatal(err)
	}
	err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: "5-0", Values: []any{"id", "event-5"}}).Err()
	if err == nil {
		t.Fatal("Redis accepted an entry ID below the stream's last; the sequence scheme would be safe after all")
	}
	t.Logf("the retried event 5, never added, is refused: %v", err)

	// The sink adds both, and refuses only the true repeat.
	s := newSink(t, rdb, redissink.Config{Stream: stream + ".{type}"})
	e7, e5 := event("a", "e7"), event("a", "e5")
	for _, e := range []outbox.Event{e7, e5, e7} {
		if err := s.Handle(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	checkExactlyOnce(t, readAll(t, rdb, stream+".a"), map[string]bool{e7.ID: true, e5.ID: true})
}

func event(typ, entity string) outbox.Event {
	return outbox.Event{ID: uuid.NewString(), Type: typ, EntityID: entity, Attempts: 1, CreatedAt: time.Now()}
}

func TestEntryFieldsAndTraceContext(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{user_id}.{type}"})
	e := event("order.created", "order-1")
	e.UserID = "u{1}"
	e.Metadata = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "baggage": "tenant=acme", "source": "api"}
	e.Payload = json.RawMessage(`{"total":12}`)
	if err := s.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	stream := p + ".u_1_.order.created"
	if got := s.Stream(e); got != stream {
		t.Fatalf("stream %q, want %q", got, stream)
	}
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d entries (%v), want 1", len(msgs), err)
	}
	v := msgs[0].Values
	if v["id"] != e.ID || v["type"] != "order.created" || v["traceparent"] != e.Metadata["traceparent"] || v["baggage"] != "tenant=acme" ||
		v["source"] != nil || v["tracestate"] != nil {
		t.Fatalf("entry fields %v", v)
	}
	env, err := envelope(v)
	if err != nil || string(env.Payload) != `{"total":12}` || env.UserID != "u{1}" {
		t.Fatalf("envelope %+v (%v)", env, err)
	}
}

func TestMaxLenTrimsTheStream(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}", MaxLen: 100})
	events := make([]outbox.Event, 2000)
	for i := range events {
		events[i] = event("a", fmt.Sprint(i))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	n, err := rdb.XLen(context.Background(), p+".a").Result()
	if err != nil {
		t.Fatal(err)
	}
	// Approximate trimming removes whole nodes (100 entries each by default).
	if n < 100 || n > 300 {
		t.Fatalf("stream holds %d entries, want about 100", n)
	}
}

// A stream key that holds another type fails the event for good; the rest of the batch
// is added.
func TestWrongTypeIsPermanentAndFailsAlone(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := prefix(t, rdb)
	if err := rdb.Set(context.Background(), p+".taken", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	errs := s.HandleBatch(context.Background(), []outbox.Event{event("ok", "1"), event("taken", "2"), event("ok", "3")})
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("good events: %v, %v", errs[0], errs[2])
	}
	if !outbox.IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), "WRONGTYPE") {
		t.Fatalf("event on a string key: %v; want a permanent WRONGTYPE", errs[1])
	}
	if n := rdb.XLen(context.Background(), p+".ok").Val(); n != 2 {
		t.Fatalf("stream holds %d entries, want 2", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg   redissink.Config
		field string
	}{
		{redissink.Config{}, ""},
		{redissink.Config{Stream: "s.{kind}"}, "Config.Stream"},
		{redissink.Config{MaxLen: -1}, "Config.MaxLen"},
		{redissink.Config{DedupWindow: -time.Second}, "Config.DedupWindow"},
		{redissink.Config{ProbeTimeout: -time.Second}, "Config.ProbeTimeout"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		_, nerr := redissink.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), tt.cfg)
		if (err == nil) != (nerr == nil) {
			t.Errorf("%+v: Validate = %v, New = %v", tt.cfg, err, nerr)
		}
		if tt.field == "" && err != nil || tt.field != "" && (!errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.field)) {
			t.Errorf("%+v: Validate = %v, want an error naming %q", tt.cfg, err, tt.field)
		}
	}
}

// redisServer is a redis-server of the test's own, persisting to an append-only file in
// dir, fsynced at every write so that a kill loses nothing it acknowledged.
type redisServer struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func (rs *redisServer) start(t *testing.T) {
	t.Helper()
	bin := cmp.Or(os.Getenv("OUTBOX_REDIS_SERVER"), "redis-server")
	cmd := exec.Command(bin, "--port", fmt.Sprint(rs.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", rs.dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	rs.cmd = cmd
	outboxtest.AwaitLine(t, out, "Ready to accept connections", 30*time.Second)
}

func (rs *redisServer) kill() {
	_ = rs.cmd.Process.Kill() // SIGKILL: no goodbye, no final flush
	_ = rs.cmd.Wait()
}

// Redis is killed in the middle of a run and started again on its append-only file:
// every event arrives, exactly once, and none is given up. The restarted Redis has
// lost the sink's script too, which the sink loads again.
func TestRedisKilledMidRunLosesNothing(t *testing.T) {
	t.Parallel()
	if os.Getenv("OUTBOX_REDIS_URL") == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the Redis tests (this one starts its own redis-server)")
	}
	if _, err := exec.LookPath(cmp.Or(os.Getenv("OUTBOX_REDIS_SERVER"), "redis-server")); err != nil {
		t.Skipf("no redis-server binary (set OUTBOX_REDIS_SERVER): %v", err)
	}
	rs := &redisServer{port: outboxtest.ServerPort(t), dir: t.TempDir()}
	rs.start(t)
	t.Cleanup(rs.kill)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rs.port)})
	defer rdb.Close()

	const n = 2000 // 20 batches, killed after 10: what is checked holds at any size
	store := sqlitetest.NewStore(t)
	ids := outboxtest.EnqueueN(t, store, n)
	obs := outboxtest.NewRecorder(n, n/2)
	p, err := outbox.NewProcessor(store, newSink(t, rdb, redissink.Config{Stream: "outboxtest.{type}"}), outbox.Config{
		BatchSize: 100, PollInterval: 50 * time.Millisecond, Observers: []outbox.Observer{obs}, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{100 * time.Millisecond}, MaxAttempts: 100, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	defer obs.Resume()

	obs.Wait(t, obs.Paused(), 2*time.Minute, "half the events")
	rs.kill()
	obs.Resume()
	obs.Wait(t, obs.FirstFailure(), 2*time.Minute, "a delivery to fail while Redis is down")
	rs.start(t)
	obs.Wait(t, obs.AllDelivered(), 2*time.Minute, "every event after the restart")
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stats, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n || stats.GivenUp != 0 {
		t.Fatalf("after the outage: %d completed, %d given up; want %d and 0", stats.Completed, stats.GivenUp, n)
	}
	t.Logf("outage: %d failed attempts retried, none given up", obs.Failed.Load())
	checkExactlyOnce(t, readAll(t, rdb, streamsOf(t, rdb, "outboxtest")...), ids)
}
