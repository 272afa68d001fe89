package kafkainbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/kafkainbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

const testTopic = "inbox-test"

// newCluster starts a kfake cluster of n brokers in the test process, with testTopic
// seeded over partitions partitions.
func newCluster(t *testing.T, brokers int, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(10 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond })}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newSink(t *testing.T, cl *kgo.Client, topic string) *kafkasink.Sink {
	t.Helper()
	s, err := kafkasink.New(cl, kafkasink.Config{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func event(typ, entity string) outbox.Event {
	return outbox.Event{ID: uuid.NewString(), Type: typ, EntityID: entity, Attempts: 1, CreatedAt: time.Now()}
}

// A record kafkasink produced reads back through Message: its event ID, its headers and
// its envelope; a record that is not an envelope is refused with its place named.
func TestMessageReadsWhatTheSinkProduced(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s, err := kafkasink.New(cl, kafkasink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e := event("order.created", "order-9")
	e.Metadata = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	r, err := s.Record(e)
	if err != nil {
		t.Fatal(err)
	}
	m := kafkainbox.Message{Record: r}
	if m.EventID() != e.ID || m.Header(kafkasink.HeaderType) != "order.created" || m.Header("traceparent") != e.Metadata["traceparent"] || m.Header("nope") != "" {
		t.Errorf("event ID %q, type %q, traceparent %q", m.EventID(), m.Header(kafkasink.HeaderType), m.Header("traceparent"))
	}
	env, err := m.Envelope()
	if err != nil || env.ID != e.ID || env.EntityID != "order-9" {
		t.Errorf("envelope %+v (%v)", env, err)
	}
	bad := kafkainbox.Message{Record: &kgo.Record{Topic: "t", Partition: 2, Offset: 5, Value: []byte("x")}}
	if _, err := bad.Envelope(); err == nil || !strings.Contains(err.Error(), "t/2@5") {
		t.Errorf("Envelope of a non-envelope = %v, want an error naming t/2@5", err)
	}
	if id := (kafkainbox.Message{Record: &kgo.Record{}}).EventID(); id != "" {
		t.Errorf("EventID of a record without headers = %q", id)
	}
}

// Consume commits a record only after the callback succeeded: a failure returns, the
// committed offset stops before the failed record, and the next Consume on the same
// client hands the failed record over first.
func TestConsumeCommitsOnlyAfterSuccess(t *testing.T) {
	c := newCluster(t, 1, 1)
	s := newSink(t, newClient(t, c), testTopic)
	var events []outbox.Event
	for i := range 20 {
		events = append(events, event("a", fmt.Sprintf("e%d", i)))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	group := "g-" + uuid.NewString()[:8]
	cons := newClient(t, c, kgo.ConsumerGroup(group), kgo.ConsumeTopics(testTopic), kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))

	var mu sync.Mutex
	var order []string
	boom := errors.New("effect failed")
	failOnce := events[7].ID
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handled := map[string]bool{}
	fn := func(_ context.Context, m kafkainbox.Message) error {
		mu.Lock()
		defer mu.Unlock()
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
	err := kafkainbox.Consume(ctx, cons, fn)
	if !errors.Is(err, boom) {
		t.Fatalf("Consume = %v, want the callback's error", err)
	}
	admin := kadm.NewClient(newClient(t, c))
	committed := func() int64 {
		offs, err := admin.FetchOffsets(context.Background(), group)
		if err != nil {
			t.Fatal(err)
		}
		o, ok := offs.Lookup(testTopic, 0)
		if !ok {
			return 0
		}
		return o.At
	}
	if got := committed(); got != 7 {
		t.Fatalf("after the failure, committed offset %d, want 7 (the failed record)", got)
	}
	if err := kafkainbox.Consume(ctx, cons, fn); err != nil {
		t.Fatal(err)
	}
	if got := committed(); got != 20 {
		t.Fatalf("committed offset %d, want 20", got)
	}
	want := []string{}
	for _, e := range events[:8] {
		want = append(want, e.ID)
	}
	for _, e := range events[7:] {
		want = append(want, e.ID)
	}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("callback saw %d records %v;\nwant %d: the first 8, then from the failed one on", len(order), order, len(want))
	}
}

func TestConsumeRefusesAutoCommit(t *testing.T) {
	c := newCluster(t, 1, 1)
	for _, opts := range [][]kgo.Opt{
		{kgo.ConsumeTopics(testTopic)},
		{kgo.ConsumerGroup("g"), kgo.ConsumeTopics(testTopic)},
	} {
		if err := kafkainbox.Consume(context.Background(), newClient(t, c, opts...), nil); !errors.Is(err, kafkainbox.ErrAutoCommit) {
			t.Errorf("Consume = %v, want ErrAutoCommit", err)
		}
	}
}
