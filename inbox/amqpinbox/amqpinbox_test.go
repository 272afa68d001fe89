package amqpinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
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
	}, amqpinbox.Config{RequeueDelay: time.Millisecond, Logger: outboxtest.Discard})
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

// delays records the waits a Consumer does before requeueing, and waits them.
type delays struct {
	mu  sync.Mutex
	got []time.Duration
}

func (w *delays) wait(ctx context.Context, d time.Duration) {
	w.mu.Lock()
	w.got = append(w.got, d)
	w.mu.Unlock()
	amqpinbox.Sleep(ctx, d)
}

func (w *delays) seen() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.got...)
}

// next returns the next delivery of ds, failing t after a minute.
func next(t *testing.T, ds <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case d := <-ds:
		return d
	case <-time.After(time.Minute):
		t.Fatal("no delivery within a minute")
	}
	panic("unreachable")
}

// A message whose effect fails four times in a row is held before each requeue, for
// a delay that doubles up to the cap; it applies on its fifth delivery. That success
// starts the delays over: the next message's failure waits the first delay again.
func TestRequeueDelayGrowsPerFailureInARow(t *testing.T) {
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	rc := inboxtest.NewReceiver(t)
	failures := map[string]int{} // to go, per message
	c, err := amqpinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error {
		if err := rc.Apply(ctx, tx, d.MessageId); err != nil {
			return err
		}
		if failures[d.MessageId] > 0 {
			failures[d.MessageId]--
			return errors.New("database hiccup")
		}
		return nil
	}, amqpinbox.Config{RequeueDelay: 10 * time.Millisecond, MaxRequeueDelay: 40 * time.Millisecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	w := &delays{}
	amqpinbox.SetWait(c, w.wait)
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One message at a time, so that each failure in a row is the same message's.
	for _, m := range []struct{ failures, deliveries int }{{4, 5}, {1, 2}} {
		id := uuid.Must(uuid.NewV7()).String()
		failures[id] = m.failures
		if err := ch.PublishWithContext(context.Background(), "amq.topic", prefix+".flaky", false, false, amqp.Publishing{MessageId: id}); err != nil {
			t.Fatal(err)
		}
		for i := range m.deliveries {
			d := next(t, ds)
			want := inbox.Failed
			if i == m.deliveries-1 {
				want = inbox.Applied
			}
			if r, err := c.Handle(context.Background(), d); r != want {
				t.Fatalf("delivery %d of %s: %s (%v), want %s", i+1, id, r, err, want)
			}
		}
		if n := rc.Effects(t, id); n != 1 {
			t.Fatalf("%s: %d effects, want 1", id, n)
		}
	}
	ms := time.Millisecond
	if got, want := w.seen(), []time.Duration{10 * ms, 20 * ms, 40 * ms, 40 * ms, 10 * ms}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("waits before requeueing %v, want %v", got, want)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if n := queueLength(t, url, queue); n != 0 {
		t.Fatalf("%d messages left in the queue, want 0", n)
	}
}

// An effect that always fails is not redelivered as fast as the broker can: over two
// seconds with delays of 100ms doubling to 400ms, about seven deliveries (fewer on a
// slow machine), where requeueing at once gave 2,089 in one run.
func TestFailingEffectIsNotRedeliveredAtOnce(t *testing.T) {
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	rc := inboxtest.NewReceiver(t)
	c, err := amqpinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error {
		return errors.New("database down")
	}, amqpinbox.Config{RequeueDelay: 100 * time.Millisecond, MaxRequeueDelay: 400 * time.Millisecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "amq.topic", prefix+".failing", false, false, amqp.Publishing{MessageId: uuid.Must(uuid.NewV7()).String()}); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deliveries := 0
	c.Handle(ctx, next(t, ds))
	deliveries++
	window := time.After(2 * time.Second)
	for deliveries < 2 || window != nil {
		select {
		case d := <-ds:
			deliveries++
			c.Handle(ctx, d)
		case <-window:
			window = nil
			cancel() // a wait under way ends, and the delivery is requeued
		case <-time.After(time.Minute):
			t.Fatalf("%d deliveries, and no more within a minute", deliveries)
		}
	}
	if deliveries > 15 {
		t.Fatalf("%d deliveries of a failing message in two seconds, want at most 15", deliveries)
	}
	t.Logf("%d deliveries in the two seconds", deliveries)
}

// The wait before a requeue ends with Handle's context (a consumer being stopped),
// and the delivery is requeued then, for another consumer.
func TestRequeueWaitEndsWithTheContext(t *testing.T) {
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	rc := inboxtest.NewReceiver(t)
	c, err := amqpinbox.New(rc.Inbox, func(ctx context.Context, tx *sql.Tx, d amqp.Delivery) error {
		return errors.New("database down")
	}, amqpinbox.Config{RequeueDelay: time.Hour, MaxRequeueDelay: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &delays{}
	amqpinbox.SetWait(c, func(wctx context.Context, d time.Duration) {
		cancel() // the consumer is stopped while the delivery is held
		w.wait(wctx, d)
	})
	if err := ch.PublishWithContext(context.Background(), "amq.topic", prefix+".failing", false, false, amqp.Publishing{MessageId: uuid.Must(uuid.NewV7()).String()}); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Handle(ctx, next(t, ds)); r != inbox.Failed {
		t.Fatalf("Handle: %s, want failed", r)
	}
	if got := w.seen(); len(got) != 1 || got[0] != time.Hour {
		t.Fatalf("waits %v, want one of an hour, cut short", got)
	}
	d := next(t, ds) // requeued, not held for the hour
	if !d.Redelivered {
		t.Fatal("the next delivery is not the requeued message")
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if n := queueLength(t, url, queue); n != 1 {
		t.Fatalf("%d messages in the queue, want the requeued one", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []amqpinbox.Config{
		{RequeueDelay: -time.Second},
		{MaxRequeueDelay: -time.Second},
		{RequeueDelay: time.Minute}, // above the default cap
		{RequeueDelay: 2 * time.Second, MaxRequeueDelay: time.Second},
	} {
		if err := cfg.Validate(); !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", cfg, err)
		}
	}
	for _, cfg := range []amqpinbox.Config{{}, {RequeueDelay: time.Minute, MaxRequeueDelay: time.Minute}} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}
