package postgres_test

import (
	"context"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// A relay that survives a silent network and a failover: both servers in the DSN
// (pgx keeps the one that accepts writes), dead peers detected in seconds, and every
// store call bounded by a third of the lease.
func ExampleConfigurePool() {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig("host=db1,db2 port=5432,5432 user=relay dbname=app target_session_attrs=read-write")
	if err != nil {
		log.Fatal(err)
	}
	postgres.ConfigurePool(cfg, 5*time.Second)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error { return nil })
	p, err := outbox.NewProcessor(store, handler, outbox.Config{LeaseDuration: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	_ = p.Start(ctx) // store calls are abandoned after 10s (RoundTripTimeout) and retried
}
