package amqpsink_test

import (
	"context"
	"log"
	"os"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sqlite"
)

// The example needs a RabbitMQ broker, so it is compiled but not run.

// A relay from an outbox to RabbitMQ: each event becomes a persistent message on the
// amq.topic exchange, routed by "orders.<type>", with its ID as message-id. An event is
// delivered once the broker confirmed it and did not return it as unroutable.
func Example() {
	ctx := context.Background()
	s, err := amqpsink.New(amqpsink.Config{
		URL:        os.Getenv("AMQP_URL"), // amqp://guest:guest@127.0.0.1:5672/
		RoutingKey: "orders.{type}",       // Exchange defaults to amq.topic
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close() // the sink owns its connection; it dials on the first delivery

	db, err := sqlite.Open("app.db", sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 1000})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(ctx)
}
