package redissink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/redissink"
)

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
	cfg := redissink.ConsumerConfig{Streams: []string{stream}, Group: "g", Consumer: "c1", Block: 50 * time.Millisecond}
	boom := errors.New("effect failed")
	failOnce := events[4].ID
	var order []string
	handled := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fn := func(_ context.Context, m redissink.Message) error {
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
	if err := redissink.Consume(ctx, rdb, cfg, fn); !errors.Is(err, boom) {
		t.Fatalf("Consume = %v, want the callback's error", err)
	}
	pending, err := rdb.XPending(context.Background(), stream, "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 6 {
		t.Fatalf("%d entries pending after the failure, want 6 (the failed one and those read after it)", pending.Count)
	}
	if err := redissink.Consume(ctx, rdb, cfg, fn); err != nil {
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
	dead := redissink.ConsumerConfig{Streams: []string{stream}, Group: "g", Consumer: "dead", Block: 50 * time.Millisecond}
	died := errors.New("crashed")
	if err := redissink.Consume(context.Background(), rdb, dead, func(context.Context, redissink.Message) error { return died }); !errors.Is(err, died) {
		t.Fatalf("Consume = %v", err)
	}
	if n := rdb.XPending(context.Background(), stream, "g").Val().Count; n != 5 {
		t.Fatalf("%d entries pending on the dead consumer, want 5", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := map[string]bool{}
	heir := redissink.ConsumerConfig{Streams: []string{stream}, Group: "g", Consumer: "heir", Block: 20 * time.Millisecond, ClaimIdle: time.Millisecond}
	err := redissink.Consume(ctx, rdb, heir, func(_ context.Context, m redissink.Message) error {
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

func TestConsumerConfigValidate(t *testing.T) {
	ok := redissink.ConsumerConfig{Streams: []string{"s"}, Group: "g", Consumer: "c"}
	tests := []struct {
		edit  func(*redissink.ConsumerConfig)
		field string
	}{
		{func(*redissink.ConsumerConfig) {}, ""},
		{func(c *redissink.ConsumerConfig) { c.Streams = nil }, "ConsumerConfig.Streams"},
		{func(c *redissink.ConsumerConfig) { c.Streams = []string{"s", ""} }, "ConsumerConfig.Streams[1]"},
		{func(c *redissink.ConsumerConfig) { c.Group = "" }, "ConsumerConfig.Group"},
		{func(c *redissink.ConsumerConfig) { c.Consumer = "" }, "ConsumerConfig.Consumer"},
		{func(c *redissink.ConsumerConfig) { c.Count = -1 }, "ConsumerConfig.Count"},
		{func(c *redissink.ConsumerConfig) { c.Block = -time.Second }, "ConsumerConfig.Block"},
		{func(c *redissink.ConsumerConfig) { c.ClaimIdle = -time.Second }, "ConsumerConfig.ClaimIdle"},
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
