package amqpinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/amqpinbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/amqpsink"
)

func amqpURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("OUTBOX_AMQP_URL")
	if u == "" {
		t.Skip("OUTBOX_AMQP_URL is not set: skipping the test against RabbitMQ (e.g. OUTBOX_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/)")
	}
	return u
}

// testQueue declares a queue of the test's own bound to amq.topic with "<prefix>.#",
// deleted when the test ends, and returns its name, the prefix, and a channel.
func testQueue(t *testing.T, url string) (string, string, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	queue := "inboxtest." + id
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(queue, false, false, false)
		}
	})
	if err := ch.QueueBind(queue, queue+".#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	return queue, queue, ch
}

// lostAck loses the acknowledgement of a delivery: the broker is told to requeue it
// instead, as it would if the consumer died just after its commit.
type lostAck struct{ amqp.Acknowledger }

func (a lostAck) Ack(tag uint64, multiple bool) error { return a.Nack(tag, multiple, true) }

// consume Handles deliveries of queue on ch until want have been answered, then
// closes ch (returning anything unacknowledged to the queue) and reports the results.
func consume(t *testing.T, ch *amqp.Channel, queue string, c *amqpinbox.Consumer, want int, loseFirstAck bool) map[inbox.Result]int {
	t.Helper()
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	results := map[inbox.Result]int{}
	timeout := time.After(time.Minute)
	for seen := 0; seen < want; seen++ {
		select {
		case d := <-ds:
			if loseFirstAck && !d.Redelivered {
				d.Acknowledger = lostAck{d.Acknowledger}
			}
			r, _ := c.Handle(context.Background(), d)
			results[r]++
		case <-timeout:
			t.Fatalf("only %d of %d deliveries within a minute", seen, want)
		}
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	return results
}

func queueLength(t *testing.T, url, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// Events published by amqpsink are each delivered twice, the acknowledgement of the
// first delivery lost after its commit: each has one effect, the redelivery is
// acknowledged as a duplicate, and the queue ends empty.
func TestRedeliveryAfterCommitAppliedOnce(t *testing.T) {
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	rc := inboxtest.NewReceiver(t)
	s, err := amqpsink.New(amqpsink.Config{URL: url, RoutingKey: prefix + ".{type}", Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 50
	var events []outbox.Event
	for range n {
		e := outbox.NewEvent("order.created", "order", "")
		if err := e.Prepare(time.Now(), outbox.DefaultMaxPayloadBytes); err != nil {
			t.Fatal(err)
		}
		events = append(events, *e)
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	c, err := amqpinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error {
		return rc.Apply(ctx, tx, d.MessageId)
	}, amqpinbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	results := consume(t, ch, queue, c, 2*n, true)
	if results[inbox.Applied] != n || results[inbox.Duplicate] != n {
		t.Fatalf("results %v, want %d applied and %d duplicates", results, n, n)
	}
	for _, e := range events {
		if got := rc.Effects(t, e.ID); got != 1 {
			t.Fatalf("event %s: %d effects, want 1", e.ID, got)
		}
	}
	if n := queueLength(t, url, queue); n != 0 {
		t.Fatalf("%d messages left in the queue, want 0", n)
	}
}

// A failed effect is rolled back and requeued; it applies on its redelivery. A
// permanent failure and a message without an ID are rejected.
func TestFailuresRequeueOrReject(t *testing.T) {
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	rc := inboxtest.NewReceiver(t)
	publish := func(key, id string) {
		if err := ch.PublishWithContext(context.Background(), "amq.topic", prefix+"."+key, false, false, amqp.Publishing{MessageId: id}); err != nil {
			t.Fatal(err)
		}
	}
	flaky, bad := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	publish("flaky", flaky)
	publish("bad", bad)
	publish("anonymous", "")
	failedOnce := false
	c, err := amqpinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error {
		if err := rc.Apply(ctx, tx, d.MessageId); err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(d.RoutingKey, ".bad"):
			return outbox.Permanent(errors.New("cannot apply this one"))
		case !failedOnce:
			failedOnce = true
			return errors.New("database hiccup")
		}
		return nil
	}, amqpinbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	results := consume(t, ch, queue, c, 4, false)
	if results[inbox.Applied] != 1 || results[inbox.Failed] != 3 {
		t.Fatalf("results %v, want 1 applied and 3 failed", results)
	}
	if rc.Effects(t, flaky) != 1 || rc.Effects(t, bad) != 0 {
		t.Fatalf("effects: flaky %d, bad %d; want 1 and 0", rc.Effects(t, flaky), rc.Effects(t, bad))
	}
	if n := queueLength(t, url, queue); n != 0 {
		t.Fatalf("%d messages left in the queue, want 0", n)
	}
}
