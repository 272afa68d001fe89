package natsinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/inbox/natsinbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/natssink"
)

func jetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	url := os.Getenv("OUTBOX_NATS_URL")
	if url == "" {
		t.Skip("OUTBOX_NATS_URL is not set: skipping the test against NATS JetStream (e.g. OUTBOX_NATS_URL=nats://127.0.0.1:4222)")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testStream creates a stream and a durable consumer of the test's own.
func testStream(t *testing.T, js jetstream.JetStream) (string, jetstream.Consumer) {
	t.Helper()
	ctx := context.Background()
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	name, prefix := "INBOXTEST_"+id, "inboxtest."+id
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
		Durable: "receiver", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return prefix, cons
}

// lostAck is a message whose acknowledgement is lost: JetStream is told to redeliver
// it instead, as it would after AckWait if the consumer died just after its commit.
type lostAck struct{ jetstream.Msg }

func (m lostAck) Ack() error { return m.Msg.Nak() }

// consume runs c on cons until want messages have been answered, and returns the
// results seen. With loseFirstAck, the acknowledgement of each message's first
// delivery is lost.
func consume(t *testing.T, cons jetstream.Consumer, c *natsinbox.Consumer, want int, loseFirstAck bool) map[inbox.Result]int {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	results := map[inbox.Result]int{}
	done := make(chan struct{})
	seen := 0
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		if meta, err := msg.Metadata(); loseFirstAck && err == nil && meta.NumDelivered == 1 {
			msg = lostAck{msg}
		}
		r, _ := c.Handle(ctx, msg)
		mu.Lock()
		defer mu.Unlock()
		results[r]++
		if seen++; seen == want {
			close(done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("only %d of %d messages answered within a minute", seen, want)
	}
	mu.Lock()
	defer mu.Unlock()
	return results
}

// Events published by natssink are each delivered twice to the consumer, the
// acknowledgement of the first delivery lost after its commit: each has one effect,
// and the redelivery is acknowledged as a duplicate.
func TestRedeliveryAfterCommitAppliedOnce(t *testing.T) {
	nc, js := jetStream(t)
	prefix, cons := testStream(t, js)
	rc := inboxtest.NewReceiver(t)
	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var events []outbox.Event
	for i := range n {
		e := outbox.NewEvent("order.created", "order", "")
		if err := e.Prepare(time.Now(), outbox.DefaultMaxPayloadBytes); err != nil {
			t.Fatal(err)
		}
		e.EntityID = e.ID[len(e.ID)-4:] + string(rune('a'+i%26))
		events = append(events, *e)
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	c, err := natsinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, msg jetstream.Msg) error {
		return rc.Apply(ctx, tx, msg.Headers().Get(jetstream.MsgIDHeader))
	}, natsinbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	results := consume(t, cons, c, 2*n, true)
	if results[inbox.Applied] != n || results[inbox.Duplicate] != n {
		t.Fatalf("results %v, want %d applied and %d duplicates", results, n, n)
	}
	for _, e := range events {
		if got := rc.Effects(t, e.ID); got != 1 {
			t.Fatalf("event %s: %d effects, want 1", e.ID, got)
		}
	}
	assertAllAcked(t, nc, cons)
}

func assertAllAcked(t *testing.T, nc *nats.Conn, cons jetstream.Consumer) {
	t.Helper()
	// Acks are sent without waiting for an answer; a flush returns once the server has
	// read everything sent before it. The consumer then applies them on a goroutine of
	// its own, so its counts may lag the flush by a moment: ask until they are zero, or
	// a deadline far past any such lag says an ack was lost.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer has %d unacknowledged and %d undelivered messages 10s after the flush, want none", info.NumAckPending, info.NumPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A failed effect is rolled back and nak'ed; JetStream redelivers the message and it
// applies once. A permanent failure and a message without an ID are terminated.
func TestFailuresNakOrTerm(t *testing.T) {
	nc, js := jetStream(t)
	prefix, cons := testStream(t, js)
	rc := inboxtest.NewReceiver(t)
	ctx := context.Background()
	publish := func(subject, id string) {
		msg := nats.NewMsg(prefix + "." + subject)
		if id != "" {
			msg.Header.Set(jetstream.MsgIDHeader, id)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	flaky, bad := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	publish("flaky", flaky)
	publish("bad", bad)
	publish("anonymous", "")
	failedOnce := false
	c, err := natsinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, msg jetstream.Msg) error {
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		if err := rc.Apply(ctx, tx, id); err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(msg.Subject(), ".bad"):
			return outbox.Permanent(errors.New("cannot apply this one"))
		case !failedOnce:
			failedOnce = true
			return errors.New("database hiccup")
		}
		return nil
	}, natsinbox.Config{NakDelay: time.Millisecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	// flaky: failed, then applied; bad: failed (terminated); anonymous: failed (terminated).
	results := consume(t, cons, c, 4, false)
	if results[inbox.Applied] != 1 || results[inbox.Failed] != 3 {
		t.Fatalf("results %v, want 1 applied and 3 failed", results)
	}
	if rc.Effects(t, flaky) != 1 || rc.Effects(t, bad) != 0 {
		t.Fatalf("effects: flaky %d, bad %d; want 1 and 0", rc.Effects(t, flaky), rc.Effects(t, bad))
	}
	assertAllAcked(t, nc, cons)
}
