package redissink_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/redissink"
)

// A relay's sink. It needs a Redis, so it is compiled but not run. The consumer's side,
// a consumer group reader that acknowledges only what its effect function completed, is
// package inbox/redisinbox.
func Example() {
	opts, err := redis.ParseURL("redis://127.0.0.1:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	s, err := redissink.New(rdb, redissink.Config{Stream: "events.{type}", MaxLen: 1_000_000, DedupWindow: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	// Give s to outbox.NewProcessor; here, one event by hand, twice: Redis adds it once.
	e := outbox.Event{ID: "0190f4c2-7d1e-7000-8000-000000000001", Type: "order.created", EntityID: "order-1", CreatedAt: time.Now()}
	for range 2 {
		if err := s.Handle(context.Background(), e); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("delivered", e.ID)
}
