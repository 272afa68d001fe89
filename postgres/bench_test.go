package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// noop is a receiver that accepts everything, a batch at a time.
type noop struct{}

func (noop) Handle(context.Context, outbox.Event) error { return nil }
func (noop) HandleBatch(_ context.Context, events []outbox.Event) []error {
	return make([]error, len(events))
}

// enqueueN writes n events in batches of 1000, each event its own entity.
func enqueueN(tb testing.TB, s *postgres.Store, n int, prefix string) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			e := outbox.NewEvent("order.created", fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("user-%d", i%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			batch = append(batch, e)
		}
		if err := s.Enqueue(ctx, time.Now(), batch...); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkDrain measures how fast one processor empties a backlog into a receiver
// that accepts everything: claim, deliver and record, batch after batch.
func BenchmarkDrain(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			pool := newPool(b, 8, "")
			s := newStore(b, pool, postgres.Config{DisableListen: true})
			enqueueN(b, s, b.N, "e")
			ts := &timedStore{Store: s}
			p, err := outbox.NewProcessor(ts, noop{}, outbox.Config{BatchSize: batch, MaxConcurrent: batch, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			n, err := p.Drain(context.Background())
			b.StopTimer()
			if err != nil || n != b.N {
				b.Fatalf("drained %d of %d: %v", n, b.N, err)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(ts.claim.Microseconds())/float64(ts.claims), "claim-µs/batch")
			b.ReportMetric(float64(ts.settle.Microseconds())/float64(ts.claims), "settle-µs/batch")
		})
	}
}

type timedStore struct {
	*postgres.Store
	claims        int
	claim, settle time.Duration
}

func (s *timedStore) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	t := time.Now()
	defer func() { s.claim += time.Since(t); s.claims++ }()
	return s.Store.Claim(ctx, p)
}

func (s *timedStore) Settle(ctx context.Context, owner string, now time.Time, o []outbox.Outcome) error {
	t := time.Now()
	defer func() { s.settle += time.Since(t) }()
	return s.Store.Settle(ctx, owner, now, o)
}

// BenchmarkClaim measures one claim (and only the claim: the settle and the refill that
// keep the backlog at its size are not timed) against a backlog of 10,000 and of
// 1,000,000 pending events. The partial index does the work, so the two should cost
// about the same; the metric to compare is µs/claim.
func BenchmarkClaim(b *testing.B) {
	for _, pending := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			pool := newPool(b, 4, "")
			schema := freshSchema(b, pool)
			s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
			table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
			populate(b, s, table, pending, 0, time.Now().Add(-time.Hour))
			for _, limit := range []int{10, 100} {
				b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
					benchmarkClaim(b, s, table, limit)
				})
			}
		})
	}
}

func benchmarkClaim(b *testing.B, s *postgres.Store, table string, limit int) {
	ctx := context.Background()
	var claiming time.Duration
	for b.Loop() {
		now := time.Now()
		started := time.Now()
		got, err := s.Claim(ctx, outbox.ClaimParams{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Minute), Limit: limit, DefaultMaxAttempts: 5})
		claiming += time.Since(started)
		if err != nil || len(got) != limit {
			b.Fatalf("claimed %d of %d: %v", len(got), limit, err)
		}
		outcomes := make([]outbox.Outcome, len(got))
		for i, e := range got {
			outcomes[i] = outbox.Outcome{ID: e.ID, Result: outbox.Delivered}
		}
		if err := s.Settle(ctx, "bench", now, outcomes); err != nil {
			b.Fatal(err)
		}
		refill(b, s, table, limit)
	}
	b.ReportMetric(float64(claiming.Microseconds())/float64(b.N), "µs/claim")
}

// refill adds n pending events at the tail, as new enqueues would.
func refill(tb testing.TB, s *postgres.Store, table string, n int) {
	tb.Helper()
	_, err := s.Pool().Exec(context.Background(), `
INSERT INTO `+table+` (id, type, entity_id, user_id, status, ordering_key, payload, created_at, updated_at, next_attempt_at)
SELECT gen_random_uuid(), 'progressEntry', 'entity-' || i, 'user-' || (i % 1000), 'pending', gen_random_uuid()::text,
       '{"kind":"weight","quantity":72.5}', now(), now(), now()
FROM generate_series(1, $1::int) AS i`, n)
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkEnqueueTx measures the application's side: eight writers, each committing
// transactions of one business row and its event. plain-2-rows is the baseline: the same
// transaction with the second row in a table without the outbox's indexes. transact runs
// in Store.Transact (NOTIFY after the commit, gathered); caller-tx in the caller's own
// pgx transaction (NOTIFY inside it); no-notify with Config.DisableNotify.
func BenchmarkEnqueueTx(b *testing.B) {
	for _, variant := range []string{"plain-2-rows", "transact", "caller-tx", "no-notify"} {
		b.Run(variant, func(b *testing.B) {
			pool := newPool(b, 8, "")
			s := newStore(b, pool, postgres.Config{DisableListen: true, DisableNotify: variant == "no-notify"})
			ctx := context.Background()
			data := pgx.Identifier{s.Config().Schema, "progress_entries"}.Sanitize()
			plain := pgx.Identifier{s.Config().Schema, "plain_events"}.Sanitize()
			if _, err := pool.Exec(ctx, `CREATE TABLE `+data+` (id text PRIMARY KEY, user_id text, quantity float8);
				CREATE TABLE `+plain+` (id uuid PRIMARY KEY, type text, entity_id text, user_id text, payload json, created_at timestamptz)`); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(4) // 2 cores × 4 = 8 writers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("entry-%d", next.Add(1))
					transact := s.Transact
					if variant == "caller-tx" {
						transact = func(ctx context.Context, fn func(pgx.Tx) error) error {
							return pgx.BeginFunc(ctx, pool, fn)
						}
					}
					err := transact(ctx, func(tx pgx.Tx) error {
						if _, err := tx.Exec(ctx, `INSERT INTO `+data+` VALUES ($1, 'user-1', 72.5)`, id); err != nil {
							return err
						}
						e := outbox.NewEvent("order.created", id, "user-1")
						e.OrderingKey = id
						e.Payload = []byte(`{"quantity":72.5}`)
						if variant == "plain-2-rows" {
							_, err := tx.Exec(ctx, `INSERT INTO `+plain+` VALUES (gen_random_uuid(), $1, $2, $3, $4, now())`,
								e.Type, e.EntityID, e.UserID, string(e.Payload))
							return err
						}
						return s.EnqueueTx(ctx, tx, e)
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
		})
	}
}

// BenchmarkCommitToDelivery measures how long an event waits between the commit that
// enqueues it (timed from just before COMMIT) and its delivery, with a relay in
// another "process" (its own Store and LISTEN connection) at the default 2s poll
// interval: the wake-up is NOTIFY's. caller-tx commits the caller's own transaction
// (NOTIFY inside it); transact uses Store.Transact (NOTIFY right after the commit).
// Reported as p50-ms and p99-ms.
func BenchmarkCommitToDelivery(b *testing.B) {
	for _, variant := range []string{"caller-tx", "transact"} {
		b.Run(variant, func(b *testing.B) {
			pool := newPool(b, 6, "")
			relayStore := newStore(b, pool, postgres.Config{})
			cfg := relayStore.Config()
			cfg.DisableListen = true
			app, err := postgres.New(context.Background(), pool, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer app.Close()
			delivered := make(chan time.Time, 1)
			p, err := outbox.NewProcessor(relayStore, outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
				delivered <- time.Now()
				return nil
			}), outbox.Config{Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := p.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			for !relayStore.Listening() { // the relay's LISTEN connection is being set up
				time.Sleep(time.Millisecond)
			}
			var latencies []time.Duration
			for b.Loop() {
				var committing time.Time
				enqueue := func(tx pgx.Tx) error {
					err := app.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "e", "u"))
					committing = time.Now()
					return err
				}
				if variant == "transact" {
					err = app.Transact(ctx, enqueue)
				} else {
					err = pgx.BeginFunc(ctx, pool, enqueue)
				}
				if err != nil {
					b.Fatal(err)
				}
				select {
				case at := <-delivered:
					latencies = append(latencies, at.Sub(committing))
				case <-time.After(10 * time.Second):
					b.Fatal("no delivery within 10s")
				}
			}
			slices.Sort(latencies)
			pct := func(p float64) float64 {
				return float64(latencies[int(p*float64(len(latencies)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(pct(1), "max-ms")
		})
	}
}

// BenchmarkDrainRunning is BenchmarkDrain with the processor running in the
// background (Start), as a relay runs it, with one or more batches in flight.
func BenchmarkDrainRunning(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		for _, inFlight := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("batch=%d/in_flight=%d", batch, inFlight), func(b *testing.B) {
				pool := newPool(b, 8, "")
				s := newStore(b, pool, postgres.Config{})
				enqueueN(b, s, b.N, "e")
				cs := &countingStore{Store: s, want: int64(b.N), done: make(chan struct{})}
				p, err := outbox.NewProcessor(cs, noop{}, outbox.Config{
					BatchSize: batch, MaxConcurrent: batch, BatchesInFlight: inFlight, Logger: outboxtest.Discard})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				b.ResetTimer()
				if err := p.Start(ctx); err != nil {
					b.Fatal(err)
				}
				select {
				case <-cs.done:
				case <-time.After(5 * time.Minute):
					b.Fatalf("%d of %d settled", cs.settled.Load(), b.N)
				}
				b.StopTimer()
				if err := p.Stop(ctx); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// countingStore closes done once want events have been recorded as delivered.
type countingStore struct {
	*postgres.Store
	settled atomic.Int64
	want    int64
	done    chan struct{}
}

func (s *countingStore) Settle(ctx context.Context, owner string, now time.Time, o []outbox.Outcome) error {
	if err := s.Store.Settle(ctx, owner, now, o); err != nil {
		return err
	}
	if s.settled.Add(int64(len(o))) == s.want {
		close(s.done)
	}
	return nil
}
