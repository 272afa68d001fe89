package postgres_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// silentProxy forwards TCP connections to a server until freeze: from then on the
// connections it holds stay open and forward nothing, in either direction (what a
// hung server, a failover behind a virtual IP or a NAT that forgot the flow look
// like to the client: no reset, no answer), while new connections are forwarded
// again, unless blackhole is set, in which case they are accepted and never answered.
type silentProxy struct {
	ln        net.Listener
	target    string
	gen       atomic.Int64 // connections of an older generation are frozen
	blackhole atomic.Bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.closeConns()
		p.wg.Wait()
	})
	return p
}

// closeConns closes every connection the proxy holds, as a reset would.
func (p *silentProxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *silentProxy) addr() string { return p.ln.Addr().String() }

// freeze silences every connection open now.
func (p *silentProxy) freeze() { p.gen.Add(1) }

func (p *silentProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		if p.blackhole.Load() {
			continue // accepted, never answered
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, s)
		p.mu.Unlock()
		gen := p.gen.Load()
		p.wg.Go(func() { p.pipe(s, c, gen) })
		p.wg.Go(func() { p.pipe(c, s, gen) })
	}
}

// pipe copies src to dst until src closes, or silently stops once its generation is
// frozen: the bytes read are dropped and nothing more is read.
func (p *silentProxy) pipe(dst, src net.Conn, gen int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.gen.Load() != gen {
			io.Copy(io.Discard, src) // hold the connection open, answer nothing
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// throughProxy returns the test database's DSN with its host replaced by addr.
func throughProxy(t *testing.T, addr string) string {
	u, err := url.Parse(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

func proxiedPool(t *testing.T, p *silentProxy, deadPeer time.Duration) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(throughProxy(t, p.addr()))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	postgres.ConfigurePool(cfg, deadPeer)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// Before the pool closes (cleanups run last first): closing a connection waits for
	// the server to hang up, which a silent one never does.
	t.Cleanup(p.closeConns)
	return pool
}

// warnings counts the log lines at warning level and above that contain a message.
type warnings struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.msgs == nil {
		w.msgs = map[string]int{}
	}
	w.msgs[r.Message]++
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }
func (w *warnings) count(msg string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs[msg]
}

// Every connection of a relay goes silent at once, mid-work: no reset, no answer,
// while new connections would work. The relay abandons the hung statements at their
// deadline, replaces its connections (the LISTEN one too, after its quiet spell
// fails a ping), and delivers everything committed meanwhile within one lease
// duration of the silence, having logged what it was waiting for.
//
// The bound is one lease, and the relay resumes after about a third of one (its store
// calls' default deadline): 6 s leaves a busy machine seconds of room, where 3 s left
// one or two, and still tells a relay that resumes only when leases run out.
func TestRelayResumesAfterItsConnectionsGoSilent(t *testing.T) {
	t.Parallel()
	const lease = 6 * time.Second
	proxy := newSilentProxy(t, mustHost(t))
	pool := proxiedPool(t, proxy, 2*time.Second)
	logs := &warnings{}
	s := newStore(t, pool, postgres.Config{ListenCheckInterval: 500 * time.Millisecond, Logger: slog.New(logs)})
	// Another process, committing straight to the server, not through the proxy.
	wcfg := s.Config()
	wcfg.DisableListen = true
	writer, err := postgres.New(context.Background(), sharedPool(t), wcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(writer.Close)

	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		progress  = make(chan struct{}, 1)
	)
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		delivered[e.ID]++
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	})
	p, err := outbox.NewProcessor(s, handler, outbox.Config{
		BatchSize: 20, LeaseDuration: lease, PollInterval: lease, Logger: slog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(delivered) }
	waitDelivered := func(n int, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(within)
		for count() < n {
			select {
			case <-progress:
			case <-time.After(10 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%d of %d events delivered after %s", count(), n, within)
			}
		}
		return time.Since(start)
	}

	enqueueN(t, writer, 100, "before")
	waitDelivered(100, 30*time.Second)
	listenPID := s.ListenerPID()

	proxy.freeze()
	enqueueN(t, writer, 100, "during")
	took := waitDelivered(200, 30*time.Second)
	t.Logf("delivery resumed %s after the connections went silent (lease %s)", took.Round(time.Millisecond), lease)
	if took > lease {
		t.Errorf("delivery resumed %s after the silence, more than one lease (%s)", took, lease)
	}
	if logs.count("store call abandoned at its deadline") == 0 || logs.count("waiting for the store to answer") == 0 {
		t.Errorf("the relay did not log what it waited for: %v", logs.msgs)
	}
	for deadline := time.Now().Add(time.Minute); s.ListenerPID() == listenPID || !s.Listening(); {
		if time.Now().After(deadline) {
			t.Fatalf("the silent LISTEN connection (pid %d) was not replaced; logs %v", listenPID, logs.msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A third batch arrives by NOTIFY on the replaced LISTEN connection.
	enqueueN(t, writer, 10, "after")
	waitDelivered(210, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for id, n := range delivered {
		if n > 1 {
			t.Logf("event %s delivered %d times (its outcome was in flight when the connections went silent)", id, n)
		}
	}
}

// mustHost is the test server's host:port.
func mustHost(t *testing.T) string {
	u, err := url.Parse(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// A server that accepts connections and never answers (a hung server; a port behind
// a firewall that drops): the library's calls return an error once their deadline or
// the dead-peer timeout passes, instead of hanging.
func TestNeverAnsweringServerFailsCallsInsteadOfHanging(t *testing.T) {
	t.Parallel()
	proxy := newSilentProxy(t, mustHost(t))
	pool := proxiedPool(t, proxy, time.Second)
	s := newStore(t, pool, postgres.Config{Schema: freshSchema(t, sharedPool(t))})
	proxy.blackhole.Store(true) // new connections are accepted and never answered
	proxy.freeze()              // and those open go silent
	ctx := context.Background()

	bounded := outbox.BoundStore(s, 500*time.Millisecond, slog.New(&warnings{}))
	if _, err := bounded.Stats(ctx, outbox.StatsQuery{Now: time.Now()}); !errors.Is(err, outbox.ErrTimeout) {
		t.Fatalf("Stats on a silent server: %v; want ErrTimeout", err)
	}
	if _, err := bounded.Claim(ctx, outbox.ClaimParams{Owner: "o", Now: time.Now(), LeaseUntil: time.Now().Add(time.Minute), Limit: 1}); !errors.Is(err, outbox.ErrTimeout) {
		t.Fatalf("Claim on a silent server: %v; want ErrTimeout", err)
	}

	// Connecting at all: New fails once the dead-peer bound on connecting passes.
	cfg, err := pgxpool.ParseConfig(throughProxy(t, proxy.addr()))
	if err != nil {
		t.Fatal(err)
	}
	postgres.ConfigurePool(cfg, 500*time.Millisecond)
	fresh, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	defer proxy.closeConns()
	if _, err := postgres.New(ctx, fresh, postgres.Config{}); err == nil {
		t.Fatal("New on a server that never answers succeeded")
	}
}
