package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

const createEntries = `CREATE TABLE progress_entries (
	id TEXT PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL, quantity REAL NOT NULL, date INTEGER NOT NULL)`

// BenchmarkEnqueue measures what the event costs a business transaction: the same
// transaction writing one row, with its outbox event, and with a bare second row (a
// table without indexes: the floor of any second write), under both durability
// settings. Compare row+event and row+row to row within one run.
func BenchmarkEnqueue(b *testing.B) {
	for _, sync := range []string{"NORMAL", "FULL"} {
		for _, second := range []string{"", "event", "row"} {
			name := "sync=" + sync + "/row"
			if second != "" {
				name += "+" + second
			}
			b.Run(name, func(b *testing.B) { benchmarkEnqueue(b, sync, second) })
		}
	}
}

const createBare = `CREATE TABLE bare_events (id TEXT, payload TEXT)`

func benchmarkEnqueue(b *testing.B, synchronous string, second string) {
	s := sqlitetest.NewStoreWith(b, sqlite.OpenConfig{Synchronous: synchronous})
	ctx := context.Background()
	if _, err := s.DB().ExecContext(ctx, createEntries+";"+createBare); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("entry-%d", i)
		err := s.Transact(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO progress_entries (id, user_id, kind, quantity, date) VALUES (?, 'u', 'weight', 72.5, 0)`, id); err != nil {
				return err
			}
			switch second {
			case "":
				return nil
			case "row":
				_, err := tx.ExecContext(ctx, `INSERT INTO bare_events (id, payload) VALUES (?, '{"quantity":72.5}')`, id)
				return err
			}
			e := outbox.NewEvent("order.created", id, "u")
			e.Priority, e.IsNewRecord, e.OrderingKey = 10, true, id
			e.Metadata = map[string]string{"source": "manual_entry", "app_version": "1.0.0"}
			return s.EnqueueTx(ctx, tx, e)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
}

// BenchmarkDrain measures how fast a processor empties a backlog through a handler
// that does nothing, at several batch sizes.
func BenchmarkDrain(b *testing.B) {
	for _, batch := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := sqlitetest.NewStore(b)
			ctx := context.Background()
			events := make([]*outbox.Event, b.N)
			for i := range events {
				events[i] = outbox.NewEvent("order.created", fmt.Sprintf("e%d", i), "u")
			}
			for chunk := range slices.Chunk(events, 5000) {
				if err := s.Enqueue(ctx, time.Now(), chunk...); err != nil {
					b.Fatal(err)
				}
			}
			noop := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
			p, err := outbox.NewProcessor(s, noop, outbox.Config{BatchSize: batch, MaxConcurrent: 8, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			n, err := p.Drain(ctx)
			if err != nil || n != b.N {
				b.Fatalf("drained %d of %d: %v", n, b.N, err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkCommitToHandler measures the time from a committed transaction to the
// handler call in one process, with the default 2s poll interval: only the store's
// wake-up can make it short.
func BenchmarkCommitToHandler(b *testing.B) {
	for _, mode := range []string{"Transact", "EnqueueTx"} {
		b.Run(mode, func(b *testing.B) {
			s := sqlitetest.NewStore(b)
			ctx := context.Background()
			got := make(chan time.Time, 1)
			h := outbox.HandlerFunc(func(context.Context, outbox.Event) error {
				got <- time.Now()
				return nil
			})
			p, err := outbox.NewProcessor(s, h, outbox.Config{Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			latencies := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				e := outbox.NewEvent("t", fmt.Sprintf("e%d", i), "u")
				var committed time.Time
				if mode == "Transact" {
					if err := s.Transact(ctx, func(tx *sql.Tx) error { return s.EnqueueTx(ctx, tx, e) }); err != nil {
						b.Fatal(err)
					}
					committed = time.Now()
				} else {
					tx, err := s.DB().BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.EnqueueTx(ctx, tx, e); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
					committed = time.Now()
				}
				select {
				case at := <-got:
					latencies = append(latencies, max(at.Sub(committed), 0))
				case <-time.After(10 * time.Second):
					b.Fatal("event not delivered within 10s")
				}
			}
			b.StopTimer()
			slices.Sort(latencies)
			b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

var _ = sqlite.Open
