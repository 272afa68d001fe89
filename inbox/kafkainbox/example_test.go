package kafkainbox_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/kafkainbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// A relay's sink, and a consumer that commits only what its effect function completed.
// The cluster here is kfake, in the process; a real one is named by a URL the same way.
func ExampleConsume() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "orders"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	url := "kafka://" + cluster.ListenAddrs()[0] + "/?client_id=relay" // add sasl=…, tls=true for a real cluster

	opts, err := kafkasink.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	producer, err := kgo.NewClient(opts...) // franz-go's defaults: idempotent, acks=all
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	s, err := kafkasink.New(producer, kafkasink.Config{Topic: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	// An outbox.Processor calls this for each claimed batch; here, one event by hand.
	e := outbox.Event{ID: "0190f4c2-7d1e-7000-8000-000000000001", Type: "order.created", EntityID: "order-1",
		OrderingKey: "customer-4", Attempts: 1, CreatedAt: time.Now()}
	if err := s.Handle(context.Background(), e); err != nil {
		log.Fatal(err)
	}

	consumer, err := kgo.NewClient(append(opts, kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("orders"),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	ctx, stop := context.WithCancel(context.Background())
	err = kafkainbox.Consume(ctx, consumer, func(ctx context.Context, m kafkainbox.Message) error {
		env, err := m.Envelope()
		if err != nil {
			return err
		}
		// The effect goes here, deduplicated on m.EventID() (an inbox); an error leaves
		// the record uncommitted, to be handed over again.
		fmt.Printf("%s %s key=%s event=%s\n", env.Type, env.EntityID, m.Record.Key, m.EventID())
		stop()
		return nil
	})
	fmt.Println("consume:", err)
	// Output:
	// order.created order-1 key=customer-4 event=0190f4c2-7d1e-7000-8000-000000000001
	// consume: <nil>
}
