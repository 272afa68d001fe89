package postgres_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The log layout's benchmarks (docs/log-layout.md). Each b.N iteration is one round
// that runs every variant for the same amount of work, back to back, in an order
// rotated from round to round; ratios are taken within a round and their median
// reported, so that a machine whose load drifts (a shared CI box) compares like with
// like. Run with -benchtime=Nx for N rounds.

// logBenchMedian returns the middle of xs (the mean of the two middle ones when even).
func logBenchMedian(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// logBenchWAL returns the server's current WAL position, to count the bytes written
// between two points (cluster-wide: other sessions' writes count too).
func logBenchWAL(tb testing.TB, pool *pgxpool.Pool) int64 {
	tb.Helper()
	var lsn int64
	if err := pool.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn`).Scan(&lsn); err != nil {
		tb.Fatal(err)
	}
	return lsn
}

// logBenchVariant is one way of doing a round's work: run does n units (transactions,
// events), and the round records its rate and its WAL bytes per unit.
type logBenchVariant struct {
	name       string
	run        func(n int)
	rates, wal []float64
}

// runLogBenchRounds runs b.N rounds of n units of every variant, each round after setup (when
// not nil, untimed), and reports per variant the median rate (unit/s) and WAL per
// unit, and each variant's median ratio to the first one's rate in the same round
// ("x-<first>").
func runLogBenchRounds(b *testing.B, pool *pgxpool.Pool, unit string, n int, variants []*logBenchVariant, setup func()) {
	ratios := make([][]float64, len(variants))
	b.ResetTimer()
	for round := range b.N {
		if setup != nil {
			b.StopTimer()
			setup()
			b.StartTimer()
		}
		rate := make([]float64, len(variants))
		for k := range variants {
			i := (k + round) % len(variants) // rotate the order
			v := variants[i]
			wal := logBenchWAL(b, pool)
			started := time.Now()
			v.run(n)
			rate[i] = float64(n) / time.Since(started).Seconds()
			v.rates = append(v.rates, rate[i])
			v.wal = append(v.wal, float64(logBenchWAL(b, pool)-wal)/float64(n))
		}
		for i := range variants {
			ratios[i] = append(ratios[i], rate[i]/rate[0])
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(logBenchMedian(v.rates), v.name+"-"+unit+"/s")
		b.ReportMetric(logBenchMedian(v.wal), v.name+"-WAL-B/"+unit)
		if i > 0 {
			b.ReportMetric(logBenchMedian(ratios[i]), v.name+"-x-"+variants[0].name)
		}
	}
	for i, v := range variants {
		b.Logf("%s: %s/s %v, ratio to %s %v", v.name, unit, logBenchRounded(v.rates), variants[0].name, logBenchRounded(ratios[i]))
	}
}

// logBenchRounded rounds xs to two decimals, for the log lines.
func logBenchRounded(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Round(x*100) / 100
	}
	return out
}

// BenchmarkLogAppend measures the application's side: eight writers, each committing
// transactions of one business row and its event, 500 transactions per variant and
// round. plain is the baseline: the same transaction with the second row in a table
// without indexes but its key. table writes the event to today's outbox table in the
// caller's transaction (Store.EnqueueTx, notifications on); log appends it to the log
// (Log.AppendTx) of one shard, log-16shards to a log of 16.
func BenchmarkLogAppend(b *testing.B) {
	const writers, perRound = 8, 500
	pool := newPool(b, writers, "")
	ctx := context.Background()
	schema := freshSchema(b, pool)
	s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
	l := newTestLogIn(b, pool, schema)
	l16 := newShardedLogIn(b, pool, freshSchema(b, pool), 16)
	data := pgx.Identifier{schema, "progress_entries"}.Sanitize()
	plain := pgx.Identifier{schema, "plain_events"}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+data+` (id text PRIMARY KEY, user_id text, quantity float8);
		CREATE TABLE `+plain+` (id uuid PRIMARY KEY, type text, entity_id text, user_id text, payload json, created_at timestamptz)`); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	// txns commits n transactions from eight writers, each writing a business row
	// and then its event by write.
	txns := func(write func(tx pgx.Tx, e *outbox.Event) error) func(n int) {
		return func(n int) {
			var left atomic.Int64
			left.Store(int64(n))
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						id := fmt.Sprintf("entry-%d", next.Add(1))
						err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
							if _, err := tx.Exec(ctx, `INSERT INTO `+data+` VALUES ($1, 'user-1', 72.5)`, id); err != nil {
								return err
							}
							e := outbox.NewEvent("order.created", id, "user-1")
							e.OrderingKey = id
							e.Payload = []byte(`{"quantity":72.5}`)
							return write(tx, e)
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
	}
	runLogBenchRounds(b, pool, "txn", perRound, []*logBenchVariant{
		{name: "plain", run: txns(func(tx pgx.Tx, e *outbox.Event) error {
			_, err := tx.Exec(ctx, `INSERT INTO `+plain+` VALUES (gen_random_uuid(), $1, $2, $3, $4, now())`,
				e.Type, e.EntityID, e.UserID, string(e.Payload))
			return err
		})},
		{name: "table", run: txns(func(tx pgx.Tx, e *outbox.Event) error { return s.EnqueueTx(ctx, tx, e) })},
		{name: "log", run: txns(func(tx pgx.Tx, e *outbox.Event) error { return l.AppendTx(ctx, tx, e) })},
		{name: "log-16shards", run: txns(func(tx pgx.Tx, e *outbox.Event) error { return l16.AppendTx(ctx, tx, e) })},
	}, nil)
}

// newTestLogIn is newTestLog in a schema the caller names (and drops).
func newTestLogIn(tb testing.TB, pool *pgxpool.Pool, schema string) *postgres.Log {
	tb.Helper()
	return openLog(tb, pool, postgres.LogConfig{Schema: schema})
}

// openLog migrates the log cfg describes and opens it.
func openLog(tb testing.TB, pool *pgxpool.Pool, cfg postgres.LogConfig) *postgres.Log {
	tb.Helper()
	ctx := context.Background()
	if _, err := postgres.MigrateLog(ctx, pool, cfg); err != nil {
		tb.Fatal(err)
	}
	l, err := postgres.NewLog(ctx, pool, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// fillLog appends n events in transactions of 1000.
func fillLog(tb testing.TB, l *postgres.Log, pool *pgxpool.Pool, n int) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			e := outbox.NewEvent("order.created", fmt.Sprintf("e-%d", i), fmt.Sprintf("user-%d", i%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			batch = append(batch, e)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return l.AppendTx(ctx, tx, batch...) }); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{l.Config().Schema, l.Config().Table}.Sanitize()); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLogRead measures one reader taking 5,000 events per variant and round,
// 1000 at a time, from a backlog appended (untimed) before the round. keyset is the
// log's limit: the bare statement that pages through it by its primary key, with the
// cursor's columns and decoding (no snapshots, no position kept). cursor is
// LogCursor.Read and Ack. table is today's table layout taking as many events by
// Store.Claim and Settle (the claim and the settle, without a processor).
func BenchmarkLogRead(b *testing.B) {
	const limit, perRound = 1000, 5000
	pool := newPool(b, 4, "")
	ctx := context.Background()
	schema := freshSchema(b, pool)
	s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
	l := newTestLogIn(b, pool, schema)
	c := logCursor(b, l, "bench")
	eventsTable := pgx.Identifier{schema, "outbox_events"}.Sanitize()

	// The keyset reader has a log of its own, so that it reads what the cursor reads
	// and not the same rows already cached by it.
	keysetLog := newTestLogIn(b, pool, schema+"_k")
	b.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema + "_k"}.Sanitize()+` CASCADE`)
	})
	// The cursor's columns and decoding, by the primary key alone. ORDER BY names the
	// table's columns, not the output's (xid there is text).
	keysetQuery := `SELECT '-', e.xid::text, e.seq, e.id, e.type, e.entity_id, e.user_id, e.ordering_key,
		e.max_attempts, e.priority, e.is_new_record, e.metadata::text, e.payload::text, e.created_at
		FROM ` + pgx.Identifier{schema + "_k", "outbox_log"}.Sanitize() + ` e
		WHERE (e.xid, e.seq) > ($1::text::xid8, $2) ORDER BY e.xid, e.seq LIMIT $3`
	keysetXID, keysetSeq := "0", int64(0)

	// until calls read until it has returned n events.
	until := func(read func() int) func(n int) {
		return func(n int) {
			for done := 0; done < n; {
				got := read()
				if got == 0 {
					b.Fatalf("read %d of %d events, then nothing", done, n)
				}
				done += got
			}
		}
	}
	variants := []*logBenchVariant{
		{name: "keyset", run: until(func() int {
			rows, err := pool.Query(ctx, keysetQuery, keysetXID, keysetSeq, limit)
			if err != nil {
				b.Fatal(err)
			}
			events, err := postgres.ScanLogRows(rows)
			if err != nil {
				b.Fatal(err)
			}
			if len(events) > 0 {
				last := events[len(events)-1]
				keysetXID, keysetSeq = strconv.FormatUint(last.XID, 10), last.Seq
			}
			return len(events)
		})},
		{name: "cursor", run: until(func() int {
			batch, err := c.Read(ctx, limit)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Ack(ctx, batch); err != nil {
				b.Fatal(err)
			}
			return len(batch.Events)
		})},
		{name: "table", run: until(func() int {
			now := time.Now()
			got, err := s.Claim(ctx, outbox.ClaimParams{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Minute), Limit: limit, DefaultMaxAttempts: 5})
			if err != nil {
				b.Fatal(err)
			}
			outcomes := make([]outbox.Outcome, len(got))
			for i, e := range got {
				outcomes[i] = outbox.Outcome{ID: e.ID, Result: outbox.Delivered}
			}
			if err := s.Settle(ctx, "bench", now, outcomes); err != nil {
				b.Fatal(err)
			}
			return len(got)
		})},
	}
	// Each round reads a backlog appended before it: the fill is not timed.
	fill := func() {
		fillLog(b, l, pool, perRound)
		fillLog(b, keysetLog, pool, perRound)
		enqueueN(b, s, perRound, "e")
		if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+eventsTable); err != nil {
			b.Fatal(err)
		}
	}
	runLogBenchRounds(b, pool, "event", perRound, variants, fill)
}
