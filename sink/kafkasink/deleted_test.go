package kafkasink_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// A topic deleted under a sink whose client has franz-go's defaults: the client
// retries the unknown topic for about 20s before it fails the record, so at a shorter
// handler deadline the record is still in flight. The probe that follows asks about
// the topic, and the event is held for it (target missing), not retried. Once the
// topic is back, the same sink delivers the event, once.
func TestTopicDeletedWhileInFlightIsHeldAtTheDeadline(t *testing.T) {
	t.Parallel()
	const topic = "deleted-in-flight"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The probe's answer is what is checked, not how fast it comes: a generous
	// ProbeTimeout costs nothing, as kfake answers at once unless the machine is busy.
	s, err := kafkasink.New(cl, kafkasink.Config{Topic: topic, ProbeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(e outbox.Event) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return s.Handle(ctx, e)
	}
	event := func() outbox.Event {
		return outbox.Event{ID: uuid.NewString(), Type: "a", EntityID: "e", Attempts: 1, CreatedAt: time.Now()}
	}
	if err := deliver(event()); err != nil {
		t.Fatal(err)
	}

	if err := c.DeleteTopic(topic); err != nil {
		t.Fatal(err)
	}
	e := event()
	err = deliver(e)
	var de *outbox.DestinationError
	if !errors.As(err, &de) || de.Reason != outbox.ReasonTargetMissing || de.Target != topic || !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("got %v; want the topic held as missing at the deadline", err)
	}

	if err := c.CreateTopic(topic, 1, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for err = deliver(e); err != nil; err = deliver(e) {
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the topic came back: %v", err)
		}
	}
	if n := c.PartitionInfo(topic, 0).HighWatermark; n != 1 {
		t.Fatalf("the recreated topic holds %d records; want the event once", n)
	}
}
