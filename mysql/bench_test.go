package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/outboxtest"
)

// The benchmarks open their pools as the CLI does: parameters interpolated on the
// client (one round trip per statement).
func benchDB(b *testing.B, maxConns int) *sql.DB {
	return openDB(b, maxConns, func(c *gomysql.Config) { c.InterpolateParams = true })
}

type noop struct{}

func (noop) Handle(context.Context, outbox.Event) error { return nil }

// BenchmarkEnqueueTx measures the application's side: eight writers, each committing
// transactions of one business row and its event. plain-2-rows is the baseline: the
// same transaction with the second row in a table without the outbox's indexes.
// transact runs in Store.Transact (in-process wake-up after the commit); caller-tx in
// the caller's own *sql.Tx.
func BenchmarkEnqueueTx(b *testing.B) {
	for _, variant := range []string{"plain-2-rows", "transact", "caller-tx"} {
		b.Run(variant, func(b *testing.B) {
			db := benchDB(b, 8)
			s := newStore(b, db, mysql.Config{})
			ctx := context.Background()
			data, plain := "`"+s.Config().Table+"_entries`", "`"+s.Config().Table+"_plain`"
			for _, q := range []string{
				`CREATE TABLE ` + data + ` (id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64), quantity DOUBLE) ENGINE = InnoDB`,
				`CREATE TABLE ` + plain + ` (id BINARY(16) PRIMARY KEY, type VARCHAR(255), entity_id VARCHAR(255), user_id VARCHAR(255),
					payload LONGBLOB, created_at BIGINT) ENGINE = InnoDB`,
			} {
				if _, err := db.Exec(q); err != nil {
					b.Fatal(err)
				}
			}
			b.Cleanup(func() { db.Exec(`DROP TABLE IF EXISTS ` + data + `, ` + plain) })
			var next atomic.Int64
			b.SetParallelism(4) // 2 cores × 4 = 8 writers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("entry-%d", next.Add(1))
					transact := s.Transact
					if variant != "transact" {
						transact = func(ctx context.Context, fn func(*sql.Tx) error) error {
							tx, err := db.BeginTx(ctx, nil)
							if err != nil {
								return err
							}
							if err := fn(tx); err != nil {
								tx.Rollback()
								return err
							}
							return tx.Commit()
						}
					}
					err := transact(ctx, func(tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, `INSERT INTO `+data+` VALUES (?, 'user-1', 72.5)`, id); err != nil {
							return err
						}
						e := outbox.NewEvent("order.created", id, "user-1")
						e.OrderingKey = id
						e.Payload = []byte(`{"quantity":72.5}`)
						if variant == "plain-2-rows" {
							_, err := tx.ExecContext(ctx, `INSERT INTO `+plain+` VALUES (UNHEX(REPLACE(UUID(), '-', '')), ?, ?, ?, ?, ?)`,
								e.Type, e.EntityID, e.UserID, []byte(e.Payload), time.Now().UnixMicro())
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

// BenchmarkDrain measures how fast one processor empties a backlog into a receiver
// that accepts everything: claim, deliver and record, batch after batch.
func BenchmarkDrain(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := benchDB(b, 8)
			s := newStore(b, db, mysql.Config{ProbeInterval: -1})
			enqueueKeyed(b, s, b.N)
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
	*mysql.Store
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

// BenchmarkCommitToDelivery measures how long an event waits between the commit that
// enqueues it (timed from just before COMMIT) and its delivery, by an idle relay
// polling every second. transact: the relay shares the application's Store, which wakes it
// after its own commit. probe: the relay has a Store of its own (as another process
// would) and learns of the commit from its probe (Config.ProbeInterval, 100ms).
// poll: no probe either; the relay finds the event at its next poll. Reported as
// p50-ms and p99-ms.
func BenchmarkCommitToDelivery(b *testing.B) {
	for _, variant := range []string{"transact", "probe", "poll"} {
		b.Run(variant, func(b *testing.B) {
			db := benchDB(b, 6)
			app := newStore(b, db, mysql.Config{})
			relay := app
			if variant != "transact" {
				cfg := app.Config()
				if variant == "poll" {
					cfg.ProbeInterval = -1
				}
				var err error
				if relay, err = mysql.New(context.Background(), db, cfg); err != nil {
					b.Fatal(err)
				}
				defer relay.Close()
			}
			delivered := make(chan time.Time, 1)
			p, err := outbox.NewProcessor(relay, outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
				delivered <- time.Now()
				return nil
			}), outbox.Config{PollInterval: time.Second, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := p.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			var latencies []time.Duration
			for b.Loop() {
				// Let the relay settle the last event and look once more, finding
				// nothing: it is idle, waiting for a wake-up or its poll. (Enqueued at
				// once, the event would be found by the look that follows a delivery.)
				// The random part keeps the commits out of step with the probe.
				b.StopTimer()
				time.Sleep(20*time.Millisecond + rand.N(100*time.Millisecond))
				b.StartTimer()
				var committing time.Time
				err := app.Transact(ctx, func(tx *sql.Tx) error {
					err := app.EnqueueTx(ctx, tx, outbox.NewEvent("order.created", "e", "u"))
					committing = time.Now()
					return err
				})
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
		})
	}
}

// BenchmarkIdleLook compares what an idle relay pays to look for work: the store's
// wake-up probe (the highest seq) against a claim that finds nothing, on a table of
// 100,000 completed events.
func BenchmarkIdleLook(b *testing.B) {
	db := benchDB(b, 2)
	s := newStore(b, db, mysql.Config{ProbeInterval: -1})
	populate(b, db, "`"+s.Config().Table+"`", 0, 100_000, time.Now().Add(-time.Hour))
	ctx := context.Background()
	b.Run("probe", func(b *testing.B) {
		query, _ := s.Statement("maxSeq", nil)
		for b.Loop() {
			var seq int64
			if err := db.QueryRowContext(ctx, query).Scan(&seq); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("empty-claim", func(b *testing.B) {
		for b.Loop() {
			now := time.Now()
			got, err := s.Claim(ctx, outbox.ClaimParams{Owner: "idle", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 100})
			if err != nil || len(got) != 0 {
				b.Fatalf("claimed %d: %v", len(got), err)
			}
		}
	})
}
