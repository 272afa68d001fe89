package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
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
		for _, second := range []string{"", "event", "event-nokey", "row"} {
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
	txn := func(i int) error {
		id := fmt.Sprintf("entry-%d", i)
		return s.Transact(ctx, func(tx *sql.Tx) error {
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
			e.Priority, e.IsNewRecord = 10, true
			if second == "event" {
				e.OrderingKey = id
			}
			e.Metadata = map[string]string{"source": "manual_entry", "app_version": "1.0.0"}
			return s.EnqueueTx(ctx, tx, e)
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := txn(i); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	b.StopTimer()
	b.ReportMetric(walFramesPerTxn(b, s.DB(), func(i int) error { return txn(b.N + i) }), "WAL-frames/txn")
}

// walFramesPerTxn runs 100 more transactions after an emptying checkpoint and counts
// the frames they appended to the WAL file: the pages each commit writes, which is what
// an event costs a transaction at synchronous=NORMAL. 100 transactions stay under the
// automatic checkpoint (1,000 frames), so none is lost to one.
func walFramesPerTxn(b *testing.B, db *sql.DB, txn func(int) error) float64 {
	ctx := context.Background()
	var seq int
	var name, file string
	if err := db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &file); err != nil {
		b.Fatal(err)
	}
	var pageSize int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		b.Fatal(err)
	}
	var busy, logFrames, checkpointed int
	if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &checkpointed); err != nil || busy != 0 {
		b.Fatalf("checkpoint: busy %d, %v", busy, err)
	}
	const n = 100
	for i := range n {
		if err := txn(i); err != nil {
			b.Fatal(err)
		}
	}
	fi, err := os.Stat(file + "-wal")
	if err != nil {
		b.Fatal(err)
	}
	const walHeader, frameHeader = 32, 24
	return float64(fi.Size()-walHeader) / float64(pageSize+frameHeader) / n
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

// BenchmarkStatsAtAMillion measures Stats with the health window on a table of a
// million events, nearly all completed long ago (as retention keeps them), with a few
// thousand recent outcomes: the window's counts read the indexes of their times, so
// the cost follows the recent events, not the table. The table is built once (about
// half a minute): run with -benchtime=20x.
func BenchmarkStatsAtAMillion(b *testing.B) {
	store := sqlitetest.NewStore(b)
	db := store.DB()
	now := time.Now()
	old, recent := now.Add(-48*time.Hour).UnixMicro(), now.Add(-5*time.Minute).UnixMicro()
	if _, err := db.Exec(`
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
INSERT INTO outbox_events (id, type, entity_id, user_id, status, attempts, created_at, updated_at,
    next_attempt_at, completed_at, last_error)
SELECT printf('%08x-0000-7000-8000-%012x', i, i), 'order.created', 'e' || i, 'user-' || (i % 1000),
       CASE WHEN i % 500 = 0 THEN 'failed' ELSE 'completed' END, 1,
       CASE WHEN i > 995000 THEN ? ELSE ? END, CASE WHEN i > 995000 THEN ? ELSE ? END,
       CASE WHEN i % 500 = 0 AND i % 1000 <> 0 THEN ? END,
       CASE WHEN i % 500 <> 0 THEN (CASE WHEN i > 995000 THEN ? ELSE ? END) END,
       CASE WHEN i % 500 = 0 THEN '503' END
FROM n`, recent, old, recent, old, recent, recent, old); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`ANALYZE`); err != nil {
		b.Fatal(err)
	}
	q := outbox.HealthRules{}.StatsQuery("", now, 5*time.Minute)
	st, err := store.Stats(context.Background(), q)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("total %d, recent %+v", st.Total, st.Recent)
	for _, bc := range []struct {
		name string
		q    outbox.StatsQuery
	}{{"with-window", q}, {"without-window", outbox.StatsQuery{Now: now, StaleAfter: 5 * time.Minute}}} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				if _, err := store.Stats(context.Background(), bc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The window's own query, alone.
	since := now.Add(-15 * time.Minute).UnixMicro()
	b.Run("window-query", func(b *testing.B) {
		for range b.N {
			var c, f, g int
			if err := db.QueryRow(sqlite.CountRecentQuery, sql.Named("user_id", ""), sql.Named("since", since)).Scan(&c, &f, &g); err != nil {
				b.Fatal(err)
			}
		}
	})
}
