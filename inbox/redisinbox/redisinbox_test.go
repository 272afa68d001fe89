package redisinbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/redisinbox"
	"github.com/fitiq/outbox/sink/redissink"
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
	p := "inboxtest." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
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

func event(typ, entity string) outbox.Event {
	return outbox.Event{ID: uuid.NewString(), Type: typ, EntityID: entity, Attempts: 1, CreatedAt: time.Now()}
}

// An entry redissink added reads back through Message: its event ID and envelope; an
// entry that is not an envelope is refused with its place named.
func TestMessageReadsWhatTheSinkAdded(t *testing.T) {
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	e := event("order.created", "order-9")
	if err := s.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	entries, err := rdb.XRange(context.Background(), p+".order.created", "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("%d entries (%v), want 1", len(entries), err)
	}
	m := redisinbox.Message{Stream: p + ".order.created", ID: entries[0].ID, Values: entries[0].Values}
	env, err := m.Envelope()
	if m.EventID() != e.ID || err != nil || env.ID != e.ID || env.EntityID != "order-9" {
		t.Errorf("event ID %q, envelope %+v (%v)", m.EventID(), env, err)
	}
	bad := redisinbox.Message{Stream: "s", ID: "1-0", Values: map[string]any{redissink.FieldEnvelope: "x"}}
	if _, err := bad.Envelope(); err == nil || !strings.Contains(err.Error(), "1-0 of s") {
		t.Errorf("Envelope of a non-envelope = %v, want an error naming 1-0 of s", err)
	}
	if id := bad.EventID(); id != "" {
		t.Errorf("EventID of an entry without an id field = %q", id)
	}
}

// Consume acknowledges an entry only after the callback succeeded: when it fails,
// Consume returns, the failed entry and those read after it stay pending, and the next
// Consume hands them over first, in order.
func TestConsumeAcksOnlyAfterSuccess(t *testing.T) {
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	var events []outbox.Event
	for i := range 10 {
		events = append(events, event("a", fmt.Sprint(i)))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	stream := p + ".a"
	cfg := redisinbox.Config{Streams: []string{stream}, Group: "g", Consumer: "c1", Block: 50 * time.Millisecond}
	boom := errors.New("effect failed")
	failOnce := events[4].ID
	var order []string
	handled := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fn := func(_ context.Context, m redisinbox.Message) error {
		order = append(order, m.EventID())
		if m.EventID() == failOnce {
			failOnce = ""
			return boom
		}
		handled[m.EventID()] = true
		if len(handled) == len(events) {
			cancel()
		}
		return nil
	}
	if err := redisinbox.Consume(ctx, rdb, cfg, fn); !errors.Is(err, boom) {
		t.Fatalf("Consume = %v, want the callback's error", err)
	}
	pending, err := rdb.XPending(context.Background(), stream, "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 6 {
		t.Fatalf("%d entries pending after the failure, want 6 (the failed one and those read after it)", pending.Count)
	}
	if err := redisinbox.Consume(ctx, rdb, cfg, fn); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XPending(context.Background(), stream, "g").Val().Count; n != 0 {
		t.Fatalf("%d entries still pending, want 0", n)
	}
	var want []string
	for _, e := range events[:5] {
		want = append(want, e.ID)
	}
	for _, e := range events[4:] {
		want = append(want, e.ID)
	}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("callback saw %d entries %v;\nwant %d: the first 5, then from the failed one on", len(order), order, len(want))
	}
}

// Entries a consumer was handed and never acknowledged (it died) are taken over by
// another consumer of the group with ClaimIdle.
func TestConsumeClaimsEntriesOfADeadConsumer(t *testing.T) {
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	var events []outbox.Event
	for i := range 5 {
		events = append(events, event("a", fmt.Sprint(i)))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	stream := p + ".a"
	dead := redisinbox.Config{Streams: []string{stream}, Group: "g", Consumer: "dead", Block: 50 * time.Millisecond}
	died := errors.New("crashed")
	if err := redisinbox.Consume(context.Background(), rdb, dead, func(context.Context, redisinbox.Message) error { return died }); !errors.Is(err, died) {
		t.Fatalf("Consume = %v", err)
	}
	if n := rdb.XPending(context.Background(), stream, "g").Val().Count; n != 5 {
		t.Fatalf("%d entries pending on the dead consumer, want 5", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := map[string]bool{}
	heir := redisinbox.Config{Streams: []string{stream}, Group: "g", Consumer: "heir", Block: 20 * time.Millisecond, ClaimIdle: time.Millisecond}
	err := redisinbox.Consume(ctx, rdb, heir, func(_ context.Context, m redisinbox.Message) error {
		got[m.EventID()] = true
		if len(got) == len(events) {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if !got[e.ID] {
			t.Fatalf("event %s was not taken over", e.ID)
		}
	}
	if n := rdb.XPending(context.Background(), stream, "g").Val().Count; n != 0 {
		t.Fatalf("%d entries still pending, want 0", n)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := redisinbox.Config{Streams: []string{"s"}, Group: "g", Consumer: "c"}
	tests := []struct {
		edit  func(*redisinbox.Config)
		field string
	}{
		{func(*redisinbox.Config) {}, ""},
		{func(c *redisinbox.Config) { c.Streams = nil }, "redisinbox.Config.Streams"},
		{func(c *redisinbox.Config) { c.Streams = []string{"s", ""} }, "redisinbox.Config.Streams[1]"},
		{func(c *redisinbox.Config) { c.Group = "" }, "redisinbox.Config.Group"},
		{func(c *redisinbox.Config) { c.Consumer = "" }, "redisinbox.Config.Consumer"},
		{func(c *redisinbox.Config) { c.Count = -1 }, "redisinbox.Config.Count"},
		{func(c *redisinbox.Config) { c.Block = -time.Second }, "redisinbox.Config.Block"},
		{func(c *redisinbox.Config) { c.ClaimIdle = -time.Second }, "redisinbox.Config.ClaimIdle"},
	}
	for _, tt := range tests {
		c := ok
		tt.edit(&c)
		err := c.Validate()
		if tt.field == "" && err != nil || tt.field != "" && (!errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.field)) {
			t.Errorf("%+v: Validate = %v, want an error naming %q", c, err, tt.field)
		}
	}
}
