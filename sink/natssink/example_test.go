package natssink_test

import (
	"context"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sqlite"
)

// The examples need a NATS server with JetStream, so they are compiled but not run.

// A relay from an outbox to JetStream: each event becomes a message on
// "orders.<type>" with its ID as Nats-Msg-Id, so a redelivered event is stored once.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222") // the caller owns the connection
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	// The stream must capture the sink's subjects; its duplicate window should outlast
	// the longest redelivery (lease + handler timeout, plus retry delays if wanted).
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "ORDERS", Subjects: []string{"orders.>"}, Duplicates: 10 * time.Minute,
	}); err != nil {
		log.Fatal(err)
	}

	s, err := natssink.New(nc, natssink.Config{Subject: "orders.{type}", Stream: "ORDERS"})
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlite.Open("app.db", sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}
	// The sink is a batch handler: a claimed batch is published at once and its
	// acknowledgements awaited together, so bigger batches go faster.
	p, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 1000})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(ctx)
}
