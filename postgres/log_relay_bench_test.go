package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// BenchmarkLogRelayDrain measures delivery end to end into a receiver that accepts
// everything (noop, a BatchHandler): each round appends 10,000 events to the log and
// enqueues 10,000 to the events table (untimed), then drains each, 1,000 at a time,
// in an order rotated from round to round. processor is today's Processor.Drain on the
// Store (claim, deliver, settle); relay is LogRelay.Drain on the log (take the cursor,
// read, look up the keys, deliver, ack, commit); relay-each is the same through a
// per-event Handler (no HandleBatch), under a cursor of its own; cursor is
// LogCursor.Read and Ack under another cursor name, over the same events, without
// delivery: the relays' limit. relay-x-cursor and relay-each-x-cursor are the medians
// of their ratios to cursor within a round. keys=entity gives every event an ordering
// key (its entity), as an application that orders by entity does; keys=none gives
// none.
func BenchmarkLogRelayDrain(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		name := "keys=none"
		if keyed {
			name = "keys=entity"
		}
		b.Run(name, func(b *testing.B) {
			const perRound, batch = 10_000, 1000
			pool := newPool(b, 8, "")
			ctx := context.Background()
			schema := freshSchema(b, pool)
			s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
			l := newTestLogIn(b, pool, schema)
			r, err := postgres.NewLogRelay(ctx, l, s, noop{}, postgres.LogRelayConfig{BatchSize: batch, MaxConcurrent: batch, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			each, err := postgres.NewLogRelay(ctx, l, s, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
				postgres.LogRelayConfig{Cursor: "each", BatchSize: batch, MaxConcurrent: batch, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			p, err := outbox.NewProcessor(s, noop{}, outbox.Config{BatchSize: batch, MaxConcurrent: batch, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			limit := logCursor(b, l, "limit")
			drained := func(what string, got, want int) {
				if got != want {
					b.Fatalf("%s drained %d events, want %d", what, got, want)
				}
			}
			variants := []*logBenchVariant{
				{name: "processor", run: func(n int) {
					got, err := p.Drain(ctx)
					if err != nil {
						b.Fatal(err)
					}
					drained("processor", got, n)
				}},
				{name: "relay", run: func(n int) {
					st, err := r.Drain(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if st.Delivered != n || st.Failed+st.Waiting != 0 {
						b.Fatalf("relay: %+v, want %d delivered", st, n)
					}
				}},
				{name: "relay-each", run: func(n int) {
					st, err := each.Drain(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if st.Delivered != n || st.Failed+st.Waiting != 0 {
						b.Fatalf("relay-each: %+v, want %d delivered", st, n)
					}
				}},
				{name: "cursor", run: func(n int) {
					got := 0
					for {
						lb, err := limit.Read(ctx, batch)
						if err != nil {
							b.Fatal(err)
						}
						if err := limit.Ack(ctx, lb); err != nil {
							b.Fatal(err)
						}
						if len(lb.Events) == 0 {
							break
						}
						got += len(lb.Events)
					}
					drained("cursor", got, n)
				}},
			}
			round := 0
			fill := func() {
				round++
				// Keys of their own: the relay would send a key's log events to the table
				// while the table holds the key unfinished.
				fillKeyed(b, pool, perRound, fmt.Sprintf("log-r%d", round), keyed, func(tx pgx.Tx, events []*outbox.Event) error {
					return l.AppendTx(ctx, tx, events...)
				})
				fillKeyed(b, pool, perRound, fmt.Sprintf("table-r%d", round), keyed, func(tx pgx.Tx, events []*outbox.Event) error {
					return s.EnqueueTx(ctx, tx, events...)
				})
				for _, table := range []string{"outbox_log", "outbox_events"} {
					if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{schema, table}.Sanitize()); err != nil {
						b.Fatal(err)
					}
				}
			}
			runLogBenchRounds(b, pool, "event", perRound, variants, fill)
			// The target is the relay's rate against its limit, the cursor's,
			// in the same round.
			cursor := variants[3]
			for _, relay := range variants[1:3] {
				ratios := make([]float64, len(relay.rates))
				for i := range ratios {
					ratios[i] = relay.rates[i] / cursor.rates[i]
				}
				b.ReportMetric(logBenchMedian(ratios), relay.name+"-x-cursor")
				b.Logf("%s ÷ cursor by round: %v", relay.name, logBenchRounded(ratios))
			}
		})
	}
	b.Run("shards", benchmarkLogRelayDrainShards)
	b.Run("slow-sink", benchmarkLogRelayDrainSlowSink)
	b.Run("look", benchmarkLogRelayDrainLook)
}

// benchmarkLogRelayDrainLook compares Drain (drain: after the first pass, the shards
// that had something, then a look in every shard) with Drain passing over every shard
// each time (every, as before), one after the other in each round (the order rotated
// from round to round). Each has a log of its own, filled before each round with
// 10,000 keyed events. Sub-benchmarks: sN is a log of N shards, sN-idle one of N
// shards of which only 2 hold events, c2 Concurrency 2. The figures are the medians
// of the within-round ratios to every, with their quartiles and range.
func benchmarkLogRelayDrainLook(b *testing.B) {
	type config struct {
		name                 string
		shards, busy, concur int
	}
	for _, c := range []config{{"s1", 1, 1, 1}, {"s4", 4, 4, 1}, {"s16", 16, 16, 1}, {"s16-c2", 16, 16, 2}, {"s16-idle", 16, 2, 1}} {
		b.Run(c.name, func(b *testing.B) {
			const perRound, batch = 10_000, 1000
			ctx := context.Background()
			pool := newPool(b, 4, "")
			modes := []string{"every", "drain"}
			var (
				drains []func(n int)
				fills  []func(round int)
			)
			for mode, mname := range modes {
				schema := freshSchema(b, pool)
				s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
				l := newShardedLogIn(b, pool, schema, c.shards)
				own := newPool(b, int32(c.concur+1), "")
				ol, err := postgres.NewLog(ctx, own, l.Config())
				if err != nil {
					b.Fatal(err)
				}
				r, err := postgres.NewLogRelay(ctx, ol, s, noop{}, postgres.LogRelayConfig{BatchSize: batch, MaxConcurrent: batch,
					Concurrency: c.concur, Logger: outboxtest.Discard})
				if err != nil {
					b.Fatal(err)
				}
				if mode == 0 {
					postgres.DrainEveryShard(r)
				}
				drains = append(drains, func(n int) { drainAll(b, []*postgres.LogRelay{r}, mname, n) })
				fills = append(fills, func(round int) {
					fillInShards(b, pool, l, perRound, fmt.Sprintf("%s-r%d", mname, round), c.busy)
					if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{schema, "outbox_log"}.Sanitize()); err != nil {
						b.Fatal(err)
					}
				})
			}
			rates := make([][]float64, len(modes))
			b.ResetTimer()
			for round := range b.N {
				b.StopTimer()
				for _, fill := range fills {
					fill(round)
				}
				b.StartTimer()
				for k := range modes {
					m := (k + round) % len(modes)
					started := time.Now()
					drains[m](perRound)
					rates[m] = append(rates[m], perRound/time.Since(started).Seconds())
				}
			}
			b.StopTimer()
			b.ReportMetric(logBenchMedian(rates[0]), "every-event/s")
			for m := 1; m < len(modes); m++ {
				ratios := make([]float64, b.N)
				for i := range ratios {
					ratios[i] = rates[m][i] / rates[0][i]
				}
				sorted := slices.Clone(ratios)
				slices.Sort(sorted)
				q := func(f float64) float64 { return sorted[int(f*float64(len(sorted)-1)+0.5)] }
				b.ReportMetric(logBenchMedian(ratios), modes[m]+"-x-every")
				b.Logf("%s %s ÷ every: median %.2f, quartiles %.2f–%.2f, range %.2f–%.2f, by round %v", c.name, modes[m],
					logBenchMedian(ratios), q(0.25), q(0.75), sorted[0], sorted[len(sorted)-1], logBenchRounded(ratios))
			}
		})
	}
}

// fillInShards appends n keyed events to l in transactions of 1,000, with keys chosen
// so that they fall in the log's first shards shards only.
func fillInShards(tb testing.TB, pool *pgxpool.Pool, l *postgres.Log, n int, prefix string, shards int) {
	tb.Helper()
	ctx := context.Background()
	key := 0
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for len(batch) < min(1000, n-start) {
			key++
			entity := fmt.Sprintf("%s-%d", prefix, key)
			if l.ShardOf(entity) >= shards {
				continue
			}
			e := outbox.NewEvent("order.created", entity, fmt.Sprintf("user-%d", key%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			e.OrderingKey = entity
			batch = append(batch, e)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return l.AppendTx(ctx, tx, batch...) }); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchmarkLogRelayDrainShards drains keyed events (keys=entity) through relays on logs
// of 1, 4 and 16 shards, by one relay and by two relays (each with a pool of its own,
// as two processes) at once; each variant has a log of its own, filled before each
// round (untimed) with 10,000 events. sN-rM is N shards and M relays; s16-r1-c2 is one
// relay stepping two shards at once (Concurrency 2).
func benchmarkLogRelayDrainShards(b *testing.B) {
	const perRound, batch = 10_000, 1000
	ctx := context.Background()
	pool := newPool(b, 4, "")
	type variant struct {
		name                       string
		shards, relays, concurrent int
	}
	var variants []*logBenchVariant
	var fills []func(round int)
	for _, v := range []variant{
		{"s1-r1", 1, 1, 1}, {"s4-r1", 4, 1, 1}, {"s16-r1", 16, 1, 1}, {"s16-r1-c2", 16, 1, 2},
		{"s1-r2", 1, 2, 1}, {"s4-r2", 4, 2, 1}, {"s16-r2", 16, 2, 1},
	} {
		schema := freshSchema(b, pool)
		s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
		l := newShardedLogIn(b, pool, schema, v.shards)
		relays := make([]*postgres.LogRelay, v.relays)
		for i := range relays {
			own := newPool(b, int32(v.concurrent+1), "")
			ol, err := postgres.NewLog(ctx, own, l.Config())
			if err != nil {
				b.Fatal(err)
			}
			if relays[i], err = postgres.NewLogRelay(ctx, ol, s, noop{}, postgres.LogRelayConfig{BatchSize: batch, MaxConcurrent: batch,
				Concurrency: v.concurrent, Logger: outboxtest.Discard}); err != nil {
				b.Fatal(err)
			}
		}
		variants = append(variants, &logBenchVariant{name: v.name, run: func(n int) {
			drainAll(b, relays, v.name, n)
		}})
		fills = append(fills, func(round int) {
			fillKeyed(b, pool, perRound, fmt.Sprintf("%s-r%d", v.name, round), true, func(tx pgx.Tx, events []*outbox.Event) error {
				return l.AppendTx(ctx, tx, events...)
			})
			if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{schema, "outbox_log"}.Sanitize()); err != nil {
				b.Fatal(err)
			}
		})
	}
	round := 0
	runLogBenchRounds(b, pool, "event", perRound, variants, func() {
		round++
		for _, fill := range fills {
			fill(round)
		}
	})
}

// slowSink is a destination that takes a fixed latency per event and, when conns is
// not nil, takes calls through one connection per process: a call waits for the
// connection, holds it for the latency, and gives it back. That is a remote API without
// a batch endpoint reached through one connection, where what one relay's process can
// send is the limit. It is a Handler only, not a BatchHandler: a BatchHandler would get
// one event of every key in one call, and the events here are each a key of their own.
// The latency is a timer, so the sink costs no CPU while it waits.
type slowSink struct {
	latency time.Duration
	conns   chan struct{} // nil: calls overlap, as many as the relay makes at once
	busy    atomic.Int64  // nanoseconds spent in calls, summed over overlapping ones
}

func newSlowSink(latency time.Duration, serialized bool) *slowSink {
	s := &slowSink{latency: latency}
	if serialized {
		s.conns = make(chan struct{}, 1)
	}
	return s
}

func (s *slowSink) Handle(ctx context.Context, _ outbox.Event) error {
	if s.conns != nil {
		select {
		case s.conns <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-s.conns }()
	}
	start := time.Now()
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.busy.Add(int64(time.Since(start)))
	return nil
}

// benchmarkLogRelayDrainSlowSink is benchmarkLogRelayDrainShards with a destination
// that bounds each relay instead of the database: each relay (a process, with a pool
// of its own) delivers through a slowSink of its own, one call at a time, 1 ms each, so
// one relay delivers at most about 1,000 events/s however many keys (MaxConcurrent) or
// shards (Concurrency) it has in flight: they all queue for its one connection. Only
// more relays add connections, and relays can only deliver at once from different
// shards. Each variant drains 2,000 keyed events per round, 100 a step (a step holds
// its shard for the batch's deliveries, so small batches let relays share shards
// evenly). sN-rM is N shards drained by M relays; s16-r1-c4 is one relay stepping four
// shards at once; s1-r1-open is one relay whose sink takes overlapping calls, so that
// MaxConcurrent (1,000, above a step's 100 keys) overlaps a step's calls and the steps'
// database work is the limit again. in-flight is the mean number of calls the sinks
// had going (at most M for sN-rM), sink-ms/call a call's latency as the sink measured
// it (the timer's overshoot included).
func benchmarkLogRelayDrainSlowSink(b *testing.B) {
	const (
		perRound, batch = 2000, 100
		latency         = time.Millisecond
	)
	ctx := context.Background()
	pool := newPool(b, 4, "")
	type variant struct {
		name                       string
		shards, relays, concurrent int
		open                       bool
	}
	var (
		variants []*logBenchVariant
		fills    []func(round int)
		report   []func()
	)
	for _, v := range []variant{
		{"s1-r1", 1, 1, 1, false}, {"s4-r1", 4, 1, 1, false}, {"s16-r1-c4", 16, 1, 4, false},
		{"s1-r4", 1, 4, 1, false}, {"s4-r2", 4, 2, 1, false}, {"s4-r4", 4, 4, 1, false}, {"s16-r4", 16, 4, 1, false},
		{"s1-r1-open", 1, 1, 1, true},
	} {
		schema := freshSchema(b, pool)
		s := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
		l := newShardedLogIn(b, pool, schema, v.shards)
		relays := make([]*postgres.LogRelay, v.relays)
		sinks := make([]*slowSink, v.relays)
		for i := range relays {
			own := newPool(b, int32(v.concurrent+1), "")
			ol, err := postgres.NewLog(ctx, own, l.Config())
			if err != nil {
				b.Fatal(err)
			}
			sinks[i] = newSlowSink(latency, !v.open)
			if relays[i], err = postgres.NewLogRelay(ctx, ol, s, sinks[i], postgres.LogRelayConfig{BatchSize: batch, MaxConcurrent: 1000,
				Concurrency: v.concurrent, Logger: outboxtest.Discard}); err != nil {
				b.Fatal(err)
			}
			// A drain of the empty log opens the relay's connections and prepares its
			// statements, which the first round would otherwise pay: a few relays' worth
			// is a visible part of a round that takes under a second.
			if _, err := relays[i].Drain(ctx); err != nil {
				b.Fatal(err)
			}
		}
		var inFlight, perCall []float64
		variants = append(variants, &logBenchVariant{name: v.name, run: func(n int) {
			var busy0 int64
			for _, sk := range sinks {
				busy0 += sk.busy.Load()
			}
			started := time.Now()
			drainAll(b, relays, v.name, n)
			took := time.Since(started)
			var busy int64
			for _, sk := range sinks {
				busy += sk.busy.Load()
			}
			busy -= busy0
			inFlight = append(inFlight, float64(busy)/float64(took))
			perCall = append(perCall, float64(busy)/float64(n)/float64(time.Millisecond))
		}})
		fills = append(fills, func(round int) {
			fillKeyed(b, pool, perRound, fmt.Sprintf("%s-r%d", v.name, round), true, func(tx pgx.Tx, events []*outbox.Event) error {
				return l.AppendTx(ctx, tx, events...)
			})
			if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{schema, "outbox_log"}.Sanitize()); err != nil {
				b.Fatal(err)
			}
		})
		report = append(report, func() {
			b.ReportMetric(logBenchMedian(inFlight), v.name+"-in-flight")
			b.ReportMetric(logBenchMedian(perCall), v.name+"-sink-ms/call")
			b.Logf("%s: calls in flight %v, sink ms/call %v", v.name, logBenchRounded(inFlight), logBenchRounded(perCall))
		})
	}
	b.Logf("%d events per variant and round, %d a step, sink latency %s, load average %s", perRound, batch, latency, loadAverage())
	round := 0
	runLogBenchRounds(b, pool, "event", perRound, variants, func() {
		round++
		for _, fill := range fills {
			fill(round)
		}
	})
	for _, r := range report {
		r()
	}
	b.Logf("load average at the end %s", loadAverage())
}

// drainAll drains the log with every one of relays at once, as separate processes
// would, and fails unless they delivered n events between them.
func drainAll(b *testing.B, relays []*postgres.LogRelay, name string, n int) {
	b.Helper()
	var (
		wg        sync.WaitGroup
		delivered atomic.Int64
	)
	for _, r := range relays {
		wg.Go(func() {
			st, err := r.Drain(context.Background())
			if err != nil {
				b.Error(err)
			}
			delivered.Add(int64(st.Delivered))
		})
	}
	wg.Wait()
	if got := delivered.Load(); got != int64(n) {
		b.Fatalf("%s delivered %d events, want %d", name, got, n)
	}
}

// fillKeyed writes n events in transactions of 1,000 through write, each with its
// entity as its ordering key when keyed.
func fillKeyed(tb testing.TB, pool *pgxpool.Pool, n int, prefix string, keyed bool, write func(tx pgx.Tx, events []*outbox.Event) error) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			e := outbox.NewEvent("order.created", fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("user-%d", i%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			if keyed {
				e.OrderingKey = e.EntityID
			}
			batch = append(batch, e)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return write(tx, batch) }); err != nil {
			tb.Fatal(err)
		}
	}
}
