package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// BenchmarkLogEnqueue is BenchmarkEnqueue's comparison in rounds (docs/log-layout.md):
// what the event costs a business transaction that writes one row, appended to the
// log, against today's EnqueueTx and a bare second row. Each b.N iteration is one
// round, in which every variant commits the same number of transactions (2,000 at
// synchronous=NORMAL, 100 at FULL), in chunks of 20 taken in turn, the order rotated
// from chunk to chunk, each variant on a database file of its own. Ratios are taken
// within a round and their median reported, so that a machine whose load drifts
// compares like with like. Run with -benchtime=Nx for N rounds.
//
// The variants, each the transaction of BenchmarkEnqueue (Store.Transact, one row in
// progress_entries) and then:
//
//	row              nothing more
//	row+log          Log.AppendTx of the event (the log's table: rowid and columns)
//	row+log-autoinc  the same on a log table declared AUTOINCREMENT
//	row+row          a bare second row (a table without indexes)
//	row+event        Store.EnqueueTx of the event (today's table layout)
//
// Reported per variant: the median rate (txn/s); for the others, the median ratio of
// their rate to row's in the same round (x-row) and the event's share of the
// transaction's cost, 1 - x-row (cost-%: the "the event costs 56 %"); and WAL
// frames per commit, counted as BenchmarkEnqueue counts them.
func BenchmarkLogEnqueue(b *testing.B) {
	for _, bc := range []struct {
		sync     string
		perRound int
	}{{"NORMAL", 2000}, {"FULL", 100}} {
		b.Run("sync="+bc.sync, func(b *testing.B) { benchmarkLogEnqueue(b, bc.sync, bc.perRound) })
	}
}

// logEnqueueChunk is how many transactions a variant commits before the next one's
// turn within a round.
const logEnqueueChunk = 20

type logEnqueueVariant struct {
	name  string
	txn   func(i int) error
	db    *sql.DB
	rates []float64
	ratio []float64
}

func benchmarkLogEnqueue(b *testing.B, synchronous string, perRound int) {
	ctx := context.Background()
	variant := func(name string) *logEnqueueVariant {
		s := sqlitetest.NewStoreWith(b, sqlite.OpenConfig{Synchronous: synchronous})
		db := s.DB()
		if _, err := db.ExecContext(ctx, createEntries+";"+createBare); err != nil {
			b.Fatal(err)
		}
		if _, err := sqlite.MigrateLog(ctx, db); err != nil {
			b.Fatal(err)
		}
		if name == "row+log-autoinc" {
			var ddl string
			if err := db.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = 'outbox_log'`).Scan(&ddl); err != nil {
				b.Fatal(err)
			}
			ddl = strings.Replace(ddl, "INTEGER PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT", 1)
			if _, err := db.ExecContext(ctx, `DROP TABLE outbox_log; `+ddl); err != nil {
				b.Fatal(err)
			}
		}
		l, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		second := func(tx *sql.Tx, id string) error { return nil }
		event := func(id string) *outbox.Event {
			e := outbox.NewEvent("order.created", id, "u")
			e.Priority, e.IsNewRecord, e.OrderingKey = 10, true, id
			e.Metadata = map[string]string{"source": "manual_entry", "app_version": "1.0.0"}
			return e
		}
		switch name {
		case "row+log", "row+log-autoinc":
			second = func(tx *sql.Tx, id string) error { return l.AppendTx(ctx, tx, event(id)) }
		case "row+row":
			second = func(tx *sql.Tx, id string) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO bare_events (id, payload) VALUES (?, '{"quantity":72.5}')`, id)
				return err
			}
		case "row+event":
			second = func(tx *sql.Tx, id string) error { return s.EnqueueTx(ctx, tx, event(id)) }
		}
		return &logEnqueueVariant{name: name, db: db, txn: func(i int) error {
			id := fmt.Sprintf("entry-%d", i)
			return s.Transact(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO progress_entries (id, user_id, kind, quantity, date) VALUES (?, 'u', 'weight', 72.5, 0)`, id); err != nil {
					return err
				}
				return second(tx, id)
			})
		}}
	}
	variants := []*logEnqueueVariant{variant("row"), variant("row+log"), variant("row+log-autoinc"), variant("row+row"), variant("row+event")}
	next := 0
	run := func(v *logEnqueueVariant, n int) time.Duration {
		started := time.Now()
		for range n {
			if err := v.txn(next); err != nil {
				b.Fatal(err)
			}
			next++
		}
		return time.Since(started)
	}
	for _, v := range variants {
		run(v, logEnqueueChunk) // warm up: statements prepared, first pages written
	}
	b.ResetTimer()
	for round := range b.N {
		// The round's transactions go in chunks, variant after variant, the order
		// rotated from chunk to chunk: a change of load hits every variant alike.
		spent := make([]time.Duration, len(variants))
		for chunk := range perRound / logEnqueueChunk {
			for k := range variants {
				i := (k + chunk + round) % len(variants)
				spent[i] += run(variants[i], logEnqueueChunk)
			}
		}
		for i, v := range variants {
			rate := float64(perRound/logEnqueueChunk*logEnqueueChunk) / spent[i].Seconds()
			v.rates = append(v.rates, rate)
			v.ratio = append(v.ratio, spent[0].Seconds()/spent[i].Seconds())
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(logBenchMedian(v.rates), v.name+"-txn/s")
		if i > 0 {
			ratio := logBenchMedian(v.ratio)
			b.ReportMetric(ratio, v.name+"-x-row")
			b.ReportMetric(100*(1-ratio), v.name+"-cost-%")
		}
		frames := walFramesPerTxn(b, v.db, func(k int) error { return v.txn(next + k) })
		next += 100
		b.ReportMetric(frames, v.name+"-WAL-frames/txn")
	}
	for _, v := range variants {
		b.Logf("%s: txn/s %v, ratio to row %v", v.name, logBenchRounded(v.rates), logBenchRounded(v.ratio))
	}
}

// logBenchMedian returns the middle of xs (the mean of the two middle ones when even).
func logBenchMedian(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// logBenchRounded rounds xs to two decimals, for the log lines.
func logBenchRounded(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Round(x*100) / 100
	}
	return out
}
