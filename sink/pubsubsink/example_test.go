package pubsubsink_test

import (
	"context"
	"log"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/pubsubsink"
	"github.com/fitiq/outbox/sqlite"
)

// The example needs Google Cloud, so it is compiled but not run.

// A relay from an outbox to a Pub/Sub topic, with Application Default Credentials:
// each message carries its event's ordering key, so a subscription with message
// ordering gets each key's events in order.
func Example() {
	ctx := context.Background()
	s, err := pubsubsink.Open(ctx, pubsubsink.Config{Project: "my-project", Topic: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	db, err := sqlite.Open("app.db", sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 100})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(ctx)
}
