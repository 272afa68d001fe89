// Command flat measures the store's claim and settle of 1,000 events with N events
// pending (go run ./cmd/flat 10000; go run ./cmd/flat 1000000), to check that their
// cost does not grow with the backlog. The backlog is written in SQL, all at once, in
// a schema of its own that is dropped afterwards; it needs the benchmark's database
// (OUTBOX_BENCH_DSN, or the default of the bench command).
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	ctx := context.Background()
	dsn := os.Getenv("OUTBOX_BENCH_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/outbox_bench?sslmode=disable"
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		panic(err)
	}
	var n int
	fmt.Sscan(os.Args[1], &n)
	schema := fmt.Sprintf("flat%d", n)
	pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE; CREATE SCHEMA `+schema)
	defer pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
	cfg := postgres.Config{Schema: schema, DisableNotify: true, DisableListen: true}
	if _, err := postgres.Migrate(ctx, pool, cfg); err != nil {
		panic(err)
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		panic(err)
	}
	// Bulk load in SQL: the store's batch insert would take minutes for 1M here.
	if _, err := pool.Exec(ctx, `INSERT INTO `+schema+`.outbox_events (id, type, entity_id, user_id, status, payload, created_at, updated_at, next_attempt_at)
		SELECT gen_random_uuid(), 'orderPlaced', g::text, 'u', 'pending', '{"a":1}', now(), now(), now() FROM generate_series(1, $1) g`, n); err != nil {
		panic(err)
	}
	pool.Exec(ctx, "VACUUM ANALYZE "+schema+".outbox_events")
	var claims, settles []float64
	for i := 0; i < 9; i++ {
		now := time.Now()
		t0 := time.Now()
		evs, err := s.Claim(ctx, outbox.ClaimParams{Owner: "p", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 1000})
		if err != nil {
			panic(err)
		}
		claims = append(claims, time.Since(t0).Seconds()*1000)
		out := make([]outbox.Outcome, len(evs))
		for j, e := range evs {
			out[j] = outbox.Outcome{ID: e.ID, Result: outbox.Delivered}
		}
		t1 := time.Now()
		if err := s.Settle(ctx, "p", time.Now(), out); err != nil {
			panic(err)
		}
		settles = append(settles, time.Since(t1).Seconds()*1000)
	}
	sort.Float64s(claims)
	sort.Float64s(settles)
	fmt.Printf("pending %d: claim of 1000 median %.1f ms (min %.1f, max %.1f); settle median %.1f ms (min %.1f, max %.1f)\n", n, claims[4], claims[0], claims[8], settles[4], settles[0], settles[8])
}
