package postgres_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
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

// BenchmarkLogRelayLatency measures the LogRelay's wake-ups (log_wake.go): how long
// after an appender's commit its event reaches the handler, and what an idle relay
// costs the database. Each b.N iteration is one round.
//
// rate=10 and rate=100: an appender commits single-event transactions (each event its
// own ordering key) at Poisson arrivals of that many a second, and each variant's
// relay delivers them; every variant of a round gets the same arrival times, and the
// variants run one after another in an order rotated from round to round. The latency
// of an event is from the moment its appender's Commit returned to the moment the
// handler was called. Variants:
//
//   - poll: the appender is on a pool of its own and tells nobody (as another process
//     would be); the relay has the default config, so its head poll finds the commit.
//   - hint: the appender is in the relay's process and commits with Log.Transact; the
//     relay's head poll is off, so only the in-process wake-up brings it.
//   - notify: the appender is on a pool of its own, and after its commit sends a
//     NOTIFY from that pool, outside its transaction; the relay's process LISTENs on a
//     connection of its own and calls Log.Committed on each notification; head poll off.
//   - sleep: no wake-up and no head poll: the relay reads every PollInterval (100 ms by
//     default), as it did before wake-ups.
//
// Per round and variant it logs p50, p90, p99 and the maximum, and the relay's round
// trips to the server per event (appenders' own statements not counted). It reports
// per variant the median over rounds of p50 and p99, the worst round's p99, and in how
// many rounds both of the targets (p50 < 2 ms, p99 < 10 ms) held.
//
// idle: a relay with nothing to deliver, for OUTBOX_LOG_IDLE_SECONDS (5 by default) per
// variant and round: head polls every 1, 2 or 5 ms (head=1ms is the default), or none
// (off: a step every PollInterval); head=1ms-steady keeps polling every 1 ms, as a
// relay does while events came within the last second (HeadPollMaxInterval 1 ms).
// OUTBOX_LOG_IDLE_OTHER_COMMITS=N has another pool commit N transactions a second to
// a table of its own meanwhile, as the other work of a busy server does: each of them
// changes the snapshot, so the head poll looks in the log after it. It reports per
// variant the round trips a second, the server CPU of the relay's sessions (from
// /proc, when the server runs on this machine) per second and per round trip, and the
// cluster's WAL per second, which other sessions of the server also write: an idle
// relay's own share is nothing (see TestLogRelayIdleWritesNothing). The relay's process
// CPU includes the other commits' goroutine, which runs in the same process.
//
// OUTBOX_LOG_LATENCY_SHARDS makes the log with that many shards (default: the
// package's default), so that the wake-ups are measured on a sharded log too.
//
// OUTBOX_LOG_LATENCY_EVENTS sets the events per variant and round (default 200 at
// 10/s, 1,000 at 100/s).
func BenchmarkLogRelayLatency(b *testing.B) {
	for _, rate := range []float64{10, 100} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) { benchLogRelayLatency(b, rate) })
	}
	b.Run("idle", benchLogRelayIdle)
}

// latencyTarget is the issue's: p50 and p99 from commit to delivery.
var latencyTarget = struct{ p50, p99 time.Duration }{2 * time.Millisecond, 10 * time.Millisecond}

// roundTrips counts a pool's round trips to the server: statements sent alone and
// batches (a pgx tracer). It also keeps what they sent, for tests that check it.
type roundTrips struct {
	n  atomic.Int64
	mu sync.Mutex
	// alone are the statements sent alone; batched, those sent in batches, of which
	// there were batches.
	alone, batched []string
	batches        int
}

func (c *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alone = append(c.alone, strings.TrimSpace(d.SQL))
	return ctx
}
func (c *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches++
	return ctx
}
func (c *roundTrips) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batched = append(c.batched, strings.TrimSpace(d.SQL))
}
func (c *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// reset forgets what was sent so far, and its count.
func (c *roundTrips) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.Store(0)
	c.alone, c.batched, c.batches = nil, nil, 0
}

// tracedPool opens a pool whose round trips are counted, with an application name of
// its own (to find its sessions), closed when tb ends.
func tracedPool(tb testing.TB, maxConns int32) (*pgxpool.Pool, *roundTrips, string) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dsn(tb))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = maxConns
	name := randomName("outbox_bench_")
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	counter := &roundTrips{}
	cfg.ConnConfig.Tracer = counter
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool, counter, name
}

// latencyRecorder is the relay's handler: when each event was first delivered. A
// relay stopped mid-step delivers its batch again (at least once), so the next
// variant's relay may begin with the last events of the previous one: they are
// recorded and not counted.
type latencyRecorder struct {
	mu     sync.Mutex
	at     map[string]time.Time
	signal chan struct{} // a delivery happened
}

func newLatencyRecorder() *latencyRecorder {
	return &latencyRecorder{at: map[string]time.Time{}, signal: make(chan struct{}, 1)}
}

func (r *latencyRecorder) Handle(_ context.Context, e outbox.Event) error {
	now := time.Now()
	r.mu.Lock()
	if _, ok := r.at[e.ID]; !ok {
		r.at[e.ID] = now
	}
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
	return nil
}

// await waits until every event of ids has been delivered, and reports whether they
// were within timeout.
func (r *latencyRecorder) await(ids []string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		missing := slices.ContainsFunc(ids, func(id string) bool { _, ok := r.at[id]; return !ok })
		r.mu.Unlock()
		if !missing {
			return true
		}
		select {
		case <-r.signal:
		case <-deadline.C:
			return false
		}
	}
}

// latencyVariant is one wake-up path: how the appender commits an event and how the
// relay is configured, and what its rounds measured.
type latencyVariant struct {
	name   string
	cfg    postgres.LogRelayConfig
	commit func(ctx context.Context, e *outbox.Event) error
	start  func(ctx context.Context) (stop func()) // the relay process's helpers, if any

	p50, p99, trips []float64 // per round: ms, ms, round trips per event
	met             int       // rounds in which both targets held
}

// quantile returns the q-quantile of sorted xs, by nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func benchLogRelayLatency(b *testing.B, rate float64) {
	ctx := context.Background()
	n := int(max(200, 10*rate))
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_LOG_LATENCY_EVENTS")); err == nil && v > 0 {
		n = v
	}
	relayPool, trips, _ := tracedPool(b, 4)
	appPool := newPool(b, 2, "")
	schema := freshSchema(b, relayPool)
	store := newStore(b, relayPool, postgres.Config{Schema: schema, DisableListen: true})
	relayLog := newShardedLogIn(b, relayPool, schema, latencyShards(b))
	appLog, err := postgres.NewLog(ctx, appPool, relayLog.Config())
	if err != nil {
		b.Fatal(err)
	}
	channel := randomName("outbox_bench_wake_")

	// appendOn commits e alone in a transaction of the appender's pool.
	appendOn := func(ctx context.Context, e *outbox.Event) error {
		return pgx.BeginFunc(ctx, appPool, func(tx pgx.Tx) error { return appLog.AppendTx(ctx, tx, e) })
	}
	off := postgres.LogRelayConfig{HeadPollInterval: -1}
	variants := []*latencyVariant{
		{name: "poll", commit: appendOn},
		{name: "hint", cfg: off, commit: func(ctx context.Context, e *outbox.Event) error {
			return relayLog.Transact(ctx, func(tx pgx.Tx) error { return relayLog.AppendTx(ctx, tx, e) })
		}},
		{name: "notify", cfg: off, commit: func(ctx context.Context, e *outbox.Event) error {
			if err := appendOn(ctx, e); err != nil {
				return err
			}
			_, err := appPool.Exec(ctx, `SELECT pg_notify($1, '')`, channel)
			return err
		}, start: func(ctx context.Context) func() {
			conn, err := pgx.ConnectConfig(ctx, relayPool.Config().ConnConfig)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
				b.Fatal(err)
			}
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := conn.WaitForNotification(lctx); err != nil {
						return
					}
					relayLog.Committed()
				}
			}()
			return func() { cancel(); <-done; conn.Close(context.Background()) }
		}},
		{name: "sleep", cfg: off, commit: appendOn},
	}
	appenderTrips := map[string]int64{"hint": 3} // BEGIN, INSERT, COMMIT on the relay's pool

	b.Logf("rate %g/s, %d events per variant and round, load average %s", rate, n, loadAverage())
	b.ResetTimer()
	for round := range b.N {
		seed := rand.Uint64()
		for k := range variants {
			v := variants[(k+round)%len(variants)]
			lat, perEvent := runLatencyVariant(b, v, relayLog, store, trips, appenderTrips[v.name], rate, n, seed)
			slices.Sort(lat)
			p50, p90, p99, worst := quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99), lat[len(lat)-1]
			v.p50, v.p99, v.trips = append(v.p50, ms(p50)), append(v.p99, ms(p99)), append(v.trips, perEvent)
			if p50 < latencyTarget.p50 && p99 < latencyTarget.p99 {
				v.met++
			}
			b.Logf("round %d rate %g %-6s p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %6.2f ms  relay round trips/event %.2f  load %s",
				round, rate, v.name, ms(p50), ms(p90), ms(p99), ms(worst), perEvent, loadAverage())
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(logBenchMedian(v.p50), v.name+"-p50-ms")
		b.ReportMetric(logBenchMedian(v.p99), v.name+"-p99-ms")
		b.ReportMetric(slices.Max(v.p99), v.name+"-worst-p99-ms")
		b.ReportMetric(float64(v.met), v.name+"-rounds-on-target")
		b.ReportMetric(logBenchMedian(v.trips), v.name+"-trips/event")
	}
}

// runLatencyVariant runs one variant for a round: a relay on relayLog, n events
// committed at Poisson arrivals of rate a second (the arrival times drawn from seed),
// and returns each event's latency and the relay's round trips per event.
func runLatencyVariant(b *testing.B, v *latencyVariant, relayLog *postgres.Log, store *postgres.Store, trips *roundTrips,
	appenderTrips int64, rate float64, n int, seed uint64) ([]time.Duration, float64) {
	ctx := context.Background()
	rec := newLatencyRecorder()
	cfg := v.cfg
	cfg.Cursor, cfg.Logger = "latency", outboxtest.Discard
	r, err := postgres.NewLogRelay(ctx, relayLog, store, rec, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Drain(ctx); err != nil {
		b.Fatal(err)
	}
	if v.start != nil {
		stop := v.start(ctx)
		defer stop()
	}
	rctx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(rctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	event := func(i int) *outbox.Event {
		e := outbox.NewEvent("order.created", fmt.Sprintf("%s-%d", v.name, i), "user-1")
		e.OrderingKey = e.EntityID
		e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
		return e
	}
	// Warm up the connections' prepared statements, untimed.
	var warm []string
	for i := range 3 {
		e := event(-1 - i)
		if err := v.commit(ctx, e); err != nil {
			b.Fatal(err)
		}
		warm = append(warm, e.ID)
	}
	if !rec.await(warm, time.Minute) {
		b.Fatalf("%s: warm-up events not delivered within a minute", v.name)
	}

	rng := rand.New(rand.NewPCG(seed, 0))
	committed := make([]time.Time, n)
	ids := make([]string, n)
	before := trips.n.Load()
	next := time.Now()
	for i := range n {
		next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		time.Sleep(time.Until(next))
		e := event(i)
		if err := v.commit(ctx, e); err != nil {
			b.Fatal(err)
		}
		committed[i], ids[i] = time.Now(), e.ID
	}
	if !rec.await(ids, time.Minute) {
		b.Fatalf("%s: not every event delivered within a minute of the last commit", v.name)
	}
	relayTrips := trips.n.Load() - before - appenderTrips*int64(n)
	lat := make([]time.Duration, n)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, id := range ids {
		lat[i] = rec.at[id].Sub(committed[i])
	}
	return lat, float64(relayTrips) / float64(n)
}

// idleVariant is a relay config whose idle cost is measured.
type idleVariant struct {
	name string
	cfg  postgres.LogRelayConfig

	pool    *pgxpool.Pool
	log     *postgres.Log
	trips   *roundTrips
	app     string
	perSec  []float64 // round trips a second
	cpu     []float64 // server CPU, ms a second (NaN unknown)
	cpuTrip []float64 // server CPU, µs a round trip
	client  []float64 // this process's CPU, ms a second
	wal     []float64 // cluster WAL, bytes a second
}

func benchLogRelayIdle(b *testing.B) {
	ctx := context.Background()
	idle := 5 * time.Second
	if v, err := strconv.ParseFloat(os.Getenv("OUTBOX_LOG_IDLE_SECONDS"), 64); err == nil && v > 0 {
		idle = time.Duration(v * float64(time.Second))
	}
	pool := newPool(b, 2, "")
	schema := freshSchema(b, pool)
	store := newStore(b, pool, postgres.Config{Schema: schema, DisableListen: true})
	made := newShardedLogIn(b, pool, schema, latencyShards(b))
	variants := []*idleVariant{
		{name: "head=1ms", cfg: postgres.LogRelayConfig{HeadPollInterval: time.Millisecond}},
		{name: "head=2ms", cfg: postgres.LogRelayConfig{HeadPollInterval: 2 * time.Millisecond}},
		{name: "head=5ms", cfg: postgres.LogRelayConfig{HeadPollInterval: 5 * time.Millisecond}},
		{name: "head=1ms-steady", cfg: postgres.LogRelayConfig{HeadPollInterval: time.Millisecond, HeadPollMaxInterval: time.Millisecond}},
		{name: "off", cfg: postgres.LogRelayConfig{HeadPollInterval: -1}},
	}
	if perSec, err := strconv.Atoi(os.Getenv("OUTBOX_LOG_IDLE_OTHER_COMMITS")); err == nil && perSec > 0 {
		b.Logf("another pool commits %d transactions a second to a table outside the log", perSec)
		stop := otherCommits(b, schema, perSec)
		defer stop()
	}
	for _, v := range variants {
		v.pool, v.trips, v.app = tracedPool(b, 2)
		l, err := postgres.NewLog(ctx, v.pool, made.Config())
		if err != nil {
			b.Fatal(err)
		}
		v.log = l
	}
	b.Logf("idle for %s per variant and round, load average %s", idle, loadAverage())
	b.ResetTimer()
	for round := range b.N {
		for k := range variants {
			v := variants[(k+round)%len(variants)]
			cfg := v.cfg
			cfg.Cursor, cfg.Logger = "idle", outboxtest.Discard
			r, err := postgres.NewLogRelay(ctx, v.log, store, noop{}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			ran := make(chan error, 1)
			go func() { ran <- r.Run(rctx) }()
			time.Sleep(50 * time.Millisecond) // past the first step and its connections' statement preparation
			cpu0, known := backendCPU(b, pool, v.app)
			client0, _ := procCPU(os.Getpid())
			trips0, wal0 := v.trips.n.Load(), logBenchWAL(b, pool)
			started := time.Now()
			time.Sleep(idle)
			elapsed := time.Since(started).Seconds()
			client1, _ := procCPU(os.Getpid())
			trips, wal, client := v.trips.n.Load()-trips0, logBenchWAL(b, pool)-wal0, client1-client0
			cpu1, known1 := backendCPU(b, pool, v.app)
			cancel()
			<-ran
			server := math.NaN()
			if known && known1 {
				server = 0
				for pid, t := range cpu1 {
					server += (t - cpu0[pid]).Seconds() // a session opened meanwhile counts from 0
				}
			}
			v.perSec = append(v.perSec, float64(trips)/elapsed)
			v.cpu = append(v.cpu, server*1000/elapsed)
			v.cpuTrip = append(v.cpuTrip, server*1e6/float64(max(trips, 1)))
			v.client = append(v.client, client.Seconds()*1000/elapsed)
			v.wal = append(v.wal, float64(wal)/elapsed)
			b.Logf("round %d idle %-8s round trips/s %7.1f  server CPU %6.2f ms/s (%5.1f µs a round trip)  relay process CPU %6.2f ms/s  cluster WAL %8.0f B/s  load %s",
				round, v.name, float64(trips)/elapsed, server*1000/elapsed, server*1e6/float64(max(trips, 1)),
				client.Seconds()*1000/elapsed, float64(wal)/elapsed, loadAverage())
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(logBenchMedian(v.perSec), v.name+"-trips/s")
		if !slices.ContainsFunc(v.cpu, math.IsNaN) {
			b.ReportMetric(logBenchMedian(v.cpu), v.name+"-server-CPU-ms/s")
			b.ReportMetric(logBenchMedian(v.cpuTrip), v.name+"-server-CPU-µs/trip")
		}
		b.ReportMetric(logBenchMedian(v.client), v.name+"-process-CPU-ms/s")
		b.ReportMetric(logBenchMedian(v.wal), v.name+"-cluster-WAL-B/s")
	}
}

// otherCommits commits perSec single-row transactions a second, from a pool of its
// own, to a table in schema outside the log, until stop is called: the rest of a busy
// server's work, which the relay's head poll sees as a changed snapshot.
func otherCommits(b *testing.B, schema string, perSec int) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool := newPool(b, 2, "")
	table := pgx.Identifier{schema, "other_work"}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+table+` (n bigint)`); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(perSec))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if _, err := pool.Exec(ctx, `INSERT INTO `+table+` VALUES ($1)`, n); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// backendCPU returns the CPU time used so far by each server session of the given
// application name; false when the server is not on this machine (or its processes
// are not readable).
func backendCPU(tb testing.TB, pool *pgxpool.Pool, app string) (map[int]time.Duration, bool) {
	tb.Helper()
	rows, err := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, app)
	if err != nil {
		tb.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		tb.Fatal(err)
	}
	out := map[int]time.Duration{}
	for _, pid := range pids {
		t, ok := procCPU(int(pid))
		if !ok {
			return nil, false
		}
		out[int(pid)] = t
	}
	return out, true
}

// procCPU reads the CPU time (user and system) a process has used from /proc (Linux,
// clock ticks of 1/100 s); false when it cannot.
func procCPU(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * (time.Second / 100), true
}

// latencyShards is OUTBOX_LOG_LATENCY_SHARDS, or 0 (the default) when unset.
func latencyShards(b *testing.B) int {
	v := os.Getenv("OUTBOX_LOG_LATENCY_SHARDS")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("OUTBOX_LOG_LATENCY_SHARDS=%q: want a number of shards", v)
	}
	return n
}
