package kafkasink_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// A relay's sink. The cluster here is kfake, in the process; a real one is named by a URL
// the same way. The consumer's side, which commits only what its effect function
// completed, is package inbox/kafkainbox.
func Example() {
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

	fmt.Println("delivered", e.ID)
	// Output:
	// delivered 0190f4c2-7d1e-7000-8000-000000000001
}
