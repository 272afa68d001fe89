package sqssink_test

import (
	"context"
	"log"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/sqssink"
	"github.com/fitiq/outbox/sqlite"
)

// The examples need AWS, so they are compiled but not run.

// A relay from an outbox to an SQS FIFO queue: each key's events keep their order in
// the queue (message group = ordering key), and an event delivered twice within five
// minutes is stored once (deduplication ID = event ID). Credentials and region come
// from the SDK's usual chain (AWS_* variables, ~/.aws, an IAM role); the queue URL
// names the region too.
func Example() {
	ctx := context.Background()
	s, err := sqssink.Open(ctx, sqssink.Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"})
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
	// The sink is a batch handler: a claimed batch goes as SendMessageBatch calls of 10.
	p, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 100})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(ctx)
}

// An SNS topic, named by its ARN; the URL form is what `outbox relay --sink` takes.
func ExampleParseURL() {
	cfg, err := sqssink.ParseURL("sns://arn:aws:sns:eu-west-1:123456789012:orders")
	if err != nil {
		log.Fatal(err)
	}
	s, err := sqssink.Open(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	_ = s // an outbox.Handler, for outbox.NewProcessor
}
