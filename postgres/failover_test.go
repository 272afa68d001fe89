package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// cluster is a PostgreSQL primary with a synchronous streaming replica, of the test's
// own: its own directories, its own ports, never the shared server.
type cluster struct {
	t       *testing.T
	bin     string
	dir     string
	primary node
	replica node
}

type node struct {
	data string
	port int
}

// serverBinaries finds PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup),
// preferring version 15.
func serverBinaries() (string, bool) {
	for _, pattern := range []string{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/*/bin"} {
		matches, _ := filepath.Glob(filepath.Join(pattern, "initdb"))
		sort.Sort(sort.Reverse(sort.StringSlice(matches)))
		for _, m := range matches {
			dir := filepath.Dir(m)
			if _, err := os.Stat(filepath.Join(dir, "pg_basebackup")); err == nil {
				return dir, true
			}
		}
	}
	return "", false
}

// run runs a server program as the postgres OS user (the server refuses to run as
// root), with output kept for the failure message.
func (c *cluster) run(name string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(c.bin, name)}, args...)...)
	}
	cmd.Dir = c.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (c *cluster) appendConf(n node, lines ...string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(n.data, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

func (c *cluster) start(n node) {
	c.run("pg_ctl", "-D", n.data, "-l", n.data+".log", "-w", "-t", "60", "start")
}

// postmasterPID reads the server's PID from its postmaster.pid.
func postmasterPID(t *testing.T, n node) int {
	f, err := os.Open(filepath.Join(n.data, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// newCluster initialises, starts and links a primary and a synchronous replica.
func newCluster(t *testing.T) *cluster {
	bin, ok := serverBinaries()
	if !ok {
		t.Skip("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found under /usr/lib/postgresql/*/bin: skipping the failover test (.ci/run installs postgresql-15)")
	}
	dir, err := os.MkdirTemp("", "outbox-failover-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, bin: bin, dir: dir,
		primary: node{data: filepath.Join(dir, "primary"), port: outboxtest.ServerPort(t)},
		replica: node{data: filepath.Join(dir, "replica"), port: outboxtest.ServerPort(t)},
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres OS user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []node{c.replica, c.primary} {
			if _, err := os.Stat(filepath.Join(n.data, "postmaster.pid")); err == nil {
				cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", n.data, "-m", "immediate", "-w", "stop")
				if os.Geteuid() != 0 {
					cmd = exec.Command(filepath.Join(bin, "pg_ctl"), "-D", n.data, "-m", "immediate", "-w", "stop")
				}
				_ = cmd.Run()
			}
		}
		os.RemoveAll(dir)
	})

	c.run("initdb", "-D", c.primary.data, "-U", "postgres", "--auth=trust", "--no-sync")
	c.appendConf(c.primary,
		fmt.Sprintf("port = %d", c.primary.port),
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", dir),
		"wal_level = replica",
		"max_wal_senders = 4",
		// Commits wait until the replica has the WAL: what it promises, a promotion keeps.
		"synchronous_standby_names = 'replica1'",
		"synchronous_commit = on",
		// Claims and outcomes commit without waiting for their flush; the WAL writer
		// flushes them within 3 × this (see the duplicates check of the failover test).
		"wal_writer_delay = 10ms",
		"shared_buffers = 32MB",
	)
	c.start(c.primary)
	c.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.primary.port), "-U", "postgres",
		"-D", c.replica.data, "-R", "-X", "stream", "--no-sync")
	c.appendConf(c.replica,
		fmt.Sprintf("port = %d", c.replica.port),
		fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=replica1'", c.primary.port),
	)
	c.start(c.replica)

	// The replica must be attached as the synchronous standby before the test relies on it.
	conn := c.connect(c.primary)
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(60 * time.Second); ; {
		var state string
		err := conn.QueryRow(context.Background(), `SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'`).Scan(&state)
		if err == nil && state == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not become a synchronous standby: %q, %v", state, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

func (c *cluster) connect(n node) *pgx.Conn {
	c.t.Helper()
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", n.port))
	if err != nil {
		c.t.Fatal(err)
	}
	return conn
}

// dsn lists both servers: pgx tries them in turn and keeps the one that accepts
// writes, so that after a promotion new connections find the new primary.
func (c *cluster) dsn() string {
	return fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write",
		c.primary.port, c.replica.port)
}

func (c *cluster) pool(t *testing.T) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(c.dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	postgres.ConfigurePool(cfg, 2*time.Second)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Two relays drain through a multi-host DSN; mid-drain the primary is killed with
// SIGKILL and the synchronous replica promoted. The relays resume on their own,
// within two lease durations of the promotion; every event whose enqueue was
// acknowledged (before or during the failover) is delivered and completed; and only
// events delivered in the last moments before the kill are delivered twice.
func TestFailoverToASynchronousReplica(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts two PostgreSQL servers: skipped with -short")
	}
	const (
		events = 6000
		lease  = 2 * time.Second
		batch  = 50
		relays = 2
	)
	c := newCluster(t)
	ctx := context.Background()
	cfg := postgres.Config{Logger: outboxtest.Discard}
	if _, err := postgres.Migrate(ctx, c.pool(t), cfg); err != nil {
		t.Fatal(err)
	}
	writer, err := postgres.New(ctx, c.pool(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	enqueueN(t, writer, events, "before")

	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		firstAt   = map[string]time.Time{} // each event's first delivery
		promoted  time.Time                // set once the replica is promoted
		resumedAt time.Time                // the first delivery of an event claimed after the promotion
		progress  = make(chan struct{}, 1)
	)
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		time.Sleep(time.Millisecond) // a delivery takes a little while, as a real one does
		mu.Lock()
		delivered[e.ID]++
		if _, ok := firstAt[e.ID]; !ok {
			firstAt[e.ID] = time.Now()
		}
		// Deliveries of events claimed before the kill need no database: only a claim
		// made on the new primary shows that a relay found it.
		if !promoted.IsZero() && resumedAt.IsZero() && e.LastAttemptAt.After(promoted) {
			resumedAt = time.Now()
		}
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(delivered) }
	drainFrom := time.Now()
	for i := range relays {
		s, err := postgres.New(ctx, c.pool(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		p, err := outbox.NewProcessor(s, handler, outbox.Config{
			BatchSize: batch, MaxConcurrent: 2, LeaseDuration: lease, PollInterval: 500 * time.Millisecond,
			Owner: fmt.Sprintf("relay-%d", i), Logger: outboxtest.Discard,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer p.Stop(ctx)
	}

	// Meanwhile an application keeps committing, one event at a time; what it was told
	// is committed must survive the failover.
	var (
		acked    sync.Map
		nAcked   atomic.Int64
		stopping = make(chan struct{})
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopping:
				return
			default:
			}
			e := outbox.NewEvent("t", fmt.Sprintf("during-%d", i), "u")
			ectx, cancel := context.WithTimeout(ctx, time.Second)
			err := writer.Enqueue(ectx, time.Now(), e)
			cancel()
			if err == nil {
				acked.Store(e.ID, true)
				nAcked.Add(1)
			} else {
				time.Sleep(20 * time.Millisecond) // the database is failing over
			}
		}
	})

	// A third into the drain, and not before 800 ms of it, so that many outcomes are old
	// enough at the kill to have reached the replica (see the duplicates check).
	for count() < events/3 || time.Since(drainFrom) < 800*time.Millisecond {
		select {
		case <-progress:
		case <-time.After(time.Minute):
			t.Fatalf("stuck at %d deliveries before the failover", count())
		}
	}
	pid := postmasterPID(t, c.primary)
	killAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := count()
	c.run("pg_ctl", "-D", c.replica.data, "-w", "-t", "60", "promote")
	// The new primary has no standby of its own: what an HA manager does on promotion,
	// stop waiting for one (it inherited synchronous_standby_names, and its commits
	// would wait forever).
	conn := c.connect(c.replica)
	if _, err := conn.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = ''`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	mu.Lock()
	promoted = time.Now()
	mu.Unlock()
	for {
		select {
		case <-progress:
		case <-time.After(time.Minute):
			t.Fatalf("no event claimed and delivered within a minute of the promotion (%d delivered so far)", count())
		}
		mu.Lock()
		at := resumedAt
		mu.Unlock()
		if !at.IsZero() {
			break
		}
	}
	mu.Lock()
	resumed := resumedAt.Sub(promoted)
	mu.Unlock()
	close(stopping)
	wg.Wait()

	// Every acknowledged event, delivered and completed on the new primary.
	want := events + int(nAcked.Load())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := writer.Stats(ctx, outbox.StatsQuery{Now: time.Now(), StaleAfter: time.Hour})
		if err == nil && st.Completed >= want && st.Pending+st.Processing+st.Failed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all events completed after the failover: %+v (%v), want %d completed", st, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	all, err := listAll(ctx, writer)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, e := range all {
		stored[e.ID] = true
	}
	lost := 0
	acked.Range(func(id, _ any) bool {
		if !stored[id.(string)] {
			lost++
		}
		return true
	})
	if lost > 0 {
		t.Errorf("%d events acknowledged as committed are missing after the failover", lost)
	}
	mu.Lock()
	defer mu.Unlock()
	// Delivered twice: the batch each relay had in flight at the kill, and events whose
	// outcome was recorded in the last moments before it. Claims and outcomes commit
	// without waiting for their WAL flush (their loss is a redelivery), so the newest
	// of them reach the replica only with the next flush: the WAL writer's, within
	// 3 × wal_writer_delay (30 ms here, 600 ms by default), or any synchronous commit's,
	// such as the application's next enqueue. An event first delivered 500 ms or more
	// before the kill (its batch of 50, two at a time, takes some 30 ms) had its outcome
	// flushed and replicated, and is never delivered again.
	durable := killAt.Add(-500 * time.Millisecond)
	twice, checked := 0, 0
	for _, first := range firstAt {
		if first.Before(durable) {
			checked++
		}
	}
	if checked == 0 {
		t.Errorf("no event was delivered 500 ms or more before the kill: the duplicates check had nothing to check")
	}
	for _, e := range all {
		switch n := delivered[e.ID]; {
		case n == 0:
			t.Errorf("event %s (%s) completed but never delivered", e.ID, e.EntityID)
		case n > 1:
			twice++
			if first := firstAt[e.ID]; first.Before(durable) {
				t.Errorf("event %s delivered %d times, first %s before the kill: its outcome was recorded long before", e.ID, n, killAt.Sub(first).Round(time.Millisecond))
			}
		}
	}
	if resumed > 2*lease {
		t.Errorf("the relays resumed %s after the promotion, more than two leases (%s)", resumed, 2*lease)
	}
	t.Logf("primary killed after %d deliveries; relays resumed %s after the promotion; %d events (%d committed during the failover), all delivered; %d delivered twice (%d in flight at most); none of the %d first delivered 500 ms or more before the kill",
		killedAt, resumed.Round(time.Millisecond), len(all), nAcked.Load(), twice, relays*batch, checked)
}
