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
