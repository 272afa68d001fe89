package postgres_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sink/httpsink"
)

// soakSample is one 10-second window of the soak.
type soakSample struct {
	at          time.Duration // since the start
	delivered   int           // in the window
	p50, p99    time.Duration // commit → delivery, in the window
	rssKB       int
	goroutines  int
	connections int // the relay's, as the server counts them (pool and LISTEN)
	backlog     int // committed, not yet delivered
	claimP99    time.Duration
	deadTuples  int // in the outbox table, as the server's statistics count them
	vacuums     int // vacuums of it so far (autovacuum's, or the soak's own)
}

func (s soakSample) String() string {
	return fmt.Sprintf("%6s  %6d/s  p50 %7s  p99 %7s  claim p99 %7s  rss %6d KiB  goroutines %4d  connections %2d  backlog %5d  dead tuples %7d  vacuums %2d",
		s.at.Round(time.Second), s.delivered/10, s.p50.Round(100*time.Microsecond), s.p99.Round(100*time.Microsecond),
		s.claimP99.Round(100*time.Microsecond), s.rssKB, s.goroutines, s.connections, s.backlog, s.deadTuples, s.vacuums)
}

// TestSoak runs a relay at a steady 1,000 events/s into an HTTP receiver for
// OUTBOX_SOAK (a duration: 10m, 1h) and samples, every 10 s, the process's RSS, its
// goroutines, the relay's connections and the commit→delivery p50/p99. It checks
// that the resources stay flat (no leak) and that the relay keeps up; the latencies
// are reported, not asserted. It is long: it runs only when OUTBOX_SOAK is set.
//
//	OUTBOX_SOAK=10m go test ./postgres -run TestSoak -v -timeout 0
func TestSoak(t *testing.T) {
	spec := os.Getenv("OUTBOX_SOAK")
	if spec == "" {
		t.Skip("OUTBOX_SOAK is not set: skipping the soak (set it to a duration, e.g. OUTBOX_SOAK=10m)")
	}
	duration, err := time.ParseDuration(spec)
	if err != nil || duration < 30*time.Second {
		t.Fatalf("OUTBOX_SOAK=%q: want a duration of at least 30s", spec)
	}
	const (
		rate   = 1000 // events per second
		window = 10 * time.Second
	)
	ctx := context.Background()
	app := randomName("outbox-soak-")
	relayPool := func() *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(dsn(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 4
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		postgres.ConfigurePool(cfg, 0)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return pool
	}()
	s := newStore(t, relayPool, postgres.Config{Schema: freshSchema(t, sharedPool(t))})
	// The outbox table churns (every event is inserted and updated twice), and its
	// claims walk the pending index past the dead entries: without vacuum their cost
	// grows with the dead tuples. A test server may run with autovacuum off; then the
	// soak does its work, every 30 s, so that it measures the outbox and not that.
	var autovacuum string
	if err := sharedPool(t).QueryRow(ctx, `SHOW autovacuum`).Scan(&autovacuum); err != nil {
		t.Fatal(err)
	}
	vacuumSelf := autovacuum != "on" && os.Getenv("OUTBOX_SOAK_NO_VACUUM") == ""
	if vacuumSelf {
		t.Log("the server's autovacuum is off: the soak vacuums the outbox table every 30s itself (OUTBOX_SOAK_NO_VACUUM=1 to see what happens without)")
	}
	wcfg := s.Config()
	wcfg.DisableListen = true
	writer, err := postgres.New(ctx, newPool(t, 4, ""), wcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	var (
		mu        sync.Mutex
		committed = map[string]time.Time{} // ID → when its commit returned
		early     = map[string]time.Time{} // delivered before the producer noted its commit
		latencies []time.Duration          // in the current window
		claims    = &claimTimes{}
		delivered int
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer receiver.Close()
	sink, err := httpsink.New(httpsink.Config{URL: receiver.URL})
	if err != nil {
		t.Fatal(err)
	}
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		if err := sink.Handle(ctx, e); err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		if at, ok := committed[e.ID]; ok {
			latencies = append(latencies, now.Sub(at))
			delete(committed, e.ID)
		} else {
			early[e.ID] = now
		}
		delivered++
		mu.Unlock()
		return nil
	})
	p, err := outbox.NewProcessor(s, handler, outbox.Config{
		BatchSize: 100, MaxConcurrent: 16, BatchesInFlight: 2, Logger: outboxtest.Discard, Observers: []outbox.Observer{claims},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)

	// The producer commits what is due at the steady rate, catching up after a slow commit.
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			due := int(time.Since(start).Seconds()*rate) - sent
			for due > 0 {
				n := min(due, 100)
				evs := make([]*outbox.Event, n)
				for j := range evs {
					evs[j] = outbox.NewEvent("soak", "e"+strconv.Itoa(sent+j), "u"+strconv.Itoa((sent+j)%50))
				}
				if err := writer.Enqueue(ctx, time.Now(), evs...); err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				at := time.Now()
				mu.Lock()
				for _, e := range evs {
					if d, ok := early[e.ID]; ok { // the relay was quicker than this bookkeeping
						latencies = append(latencies, max(d.Sub(at), 0))
						delete(early, e.ID)
						continue
					}
					committed[e.ID] = at
				}
				mu.Unlock()
				sent += n
				due -= n
			}
		}
	})

	if vacuumSelf {
		table := pgx.Identifier{s.Config().Schema, s.Config().Table}.Sanitize()
		wg.Go(func() {
			tick := time.NewTicker(30 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := sharedPool(t).Exec(ctx, `VACUUM `+table); err != nil {
					t.Errorf("vacuum: %v", err)
				}
			}
		})
	}

	var samples []soakSample
	admin := sharedPool(t)
	for at := window; at <= duration; at += window {
		time.Sleep(time.Until(start.Add(at)))
		mu.Lock()
		lat := latencies
		latencies = nil
		n := delivered
		delivered = 0
		backlog := len(committed)
		mu.Unlock()
		slices.Sort(lat)
		cl := claims.take()
		smp := soakSample{at: at, delivered: n, backlog: backlog, goroutines: runtime.NumGoroutine(), rssKB: rssKB(t)}
		if len(lat) > 0 {
			smp.p50, smp.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
		}
		if len(cl) > 0 {
			smp.claimP99 = cl[len(cl)*99/100]
		}
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&smp.connections); err != nil {
			t.Fatal(err)
		}
		if err := admin.QueryRow(ctx, `SELECT n_dead_tup, autovacuum_count + vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2`,
			s.Config().Schema, s.Config().Table).Scan(&smp.deadTuples, &smp.vacuums); err != nil {
			t.Fatal(err)
		}
		samples = append(samples, smp)
		t.Log(smp)
	}
	close(stop)
	wg.Wait()

	// Flat: a leak is growth that stays, so the least of the last minute must not be
	// above the most of everything before it (a pool warming up in the first minutes,
	// or a spike from the machine's other work, is not a leak). The first minute and
	// the last are logged side by side.
	perMinute := int(time.Minute / window)
	n := min(perMinute, len(samples)/2)
	first, before, last := samples[:n], samples[:len(samples)-n], samples[len(samples)-n:]
	peak := func(ss []soakSample, f func(soakSample) int) int {
		m := 0
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	floor := func(ss []soakSample, f func(soakSample) int) int {
		m := f(ss[0])
		for _, s := range ss {
			m = min(m, f(s))
		}
		return m
	}
	rss := func(s soakSample) int { return s.rssKB }
	gor := func(s soakSample) int { return s.goroutines }
	conns := func(s soakSample) int { return s.connections }
	backlog := func(s soakSample) int { return s.backlog }
	t.Logf("first minute: rss %d–%d KiB, goroutines %d–%d, connections %d, backlog up to %d",
		floor(first, rss), peak(first, rss), floor(first, gor), peak(first, gor), peak(first, conns), peak(first, backlog))
	t.Logf("last minute:  rss %d–%d KiB, goroutines %d–%d, connections %d, backlog up to %d",
		floor(last, rss), peak(last, rss), floor(last, gor), peak(last, gor), peak(last, conns), peak(last, backlog))
	if floor(last, gor) > peak(before, gor) {
		t.Errorf("goroutines grew: at least %d all through the last minute, at most %d before", floor(last, gor), peak(before, gor))
	}
	if floor(last, rss) > peak(before, rss)*6/5 {
		t.Errorf("RSS grew: at least %d KiB all through the last minute, at most %d before", floor(last, rss), peak(before, rss))
	}
	if peak(last, conns) > 5 { // MaxConns and the LISTEN connection
		t.Errorf("the relay holds %d connections, more than its pool and LISTEN", peak(last, conns))
	}
	if floor(last, backlog) > 10*rate {
		t.Errorf("the relay fell behind: at least %d events waiting all through the last minute", floor(last, backlog))
	}
	var lines []string
	for _, s := range samples {
		lines = append(lines, s.String())
	}
	if out := os.Getenv("OUTBOX_SOAK_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// rssKB reads the process's resident set size from /proc.
func rssKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0 // not Linux: not sampled
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// claimTimes collects how long the relay's claims take, per window.
type claimTimes struct {
	mu sync.Mutex
	ds []time.Duration
}

func (c *claimTimes) ObserveClaim(_ int, d time.Duration) {
	c.mu.Lock()
	c.ds = append(c.ds, d)
	c.mu.Unlock()
}

func (c *claimTimes) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {}

func (c *claimTimes) take() []time.Duration {
	c.mu.Lock()
	ds := c.ds
	c.ds = nil
	c.mu.Unlock()
	slices.Sort(ds)
	return ds
}
