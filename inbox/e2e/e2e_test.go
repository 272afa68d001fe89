// Package e2e_test drives events from an outbox through relays into a consumer that
// uses the inbox, while killing the relays and the consumer with SIGKILL, and checks
// that the receiver's effect table holds each event exactly once.
//
// Every process is this test binary run again: TestMain sees roleEnv and becomes a
// relay (an outbox.Processor on the outbox file, delivering with httpsink or natssink)
// or a consumer (an HTTP server with httpinbox, or a JetStream consumer with
// natsinbox, writing to the receiver file).
package e2e_test

import (
	"bufio"
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/httpinbox"
	"github.com/fitiq/outbox/inbox/natsinbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sqlite"
)

// The children read their part from the environment.
const (
	roleEnv      = "INBOX_E2E_ROLE" // "relay" or "consumer"
	outboxEnv    = "INBOX_E2E_OUTBOX"
	receiverEnv  = "INBOX_E2E_RECEIVER"
	transportEnv = "INBOX_E2E_TRANSPORT" // "http" or "nats"
	addrEnv      = "INBOX_E2E_ADDR"      // http: the consumer's listen address
	streamEnv    = "INBOX_E2E_STREAM"    // nats: the stream (subjects "<stream>.>") and its durable consumer
	hangEnv      = "INBOX_E2E_HANG"      // consumer: "<n>:<where>", hang in the message after n applied; where is "tx" or "commit"
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "relay":
		os.Exit(runRelay())
	case "consumer":
		os.Exit(runConsumer())
	}
	os.Exit(m.Run())
}

// size is the run's scale: by default 20,000 events, relays killed 30 times and the
// consumer 10 times; OUTBOX_LONG=1 multiplies it by five. Under the race detector it
// is a tenth of that (2,000 events, 6 relay kills, 4 consumer kills), unless
// OUTBOX_LONG=1.
type size struct{ events, relayKills, consumerKills int }

func runSize() size {
	switch {
	case os.Getenv("OUTBOX_LONG") == "1":
		return size{events: 100_000, relayKills: 150, consumerKills: 50}
	case raceBuild:
		return size{events: 2_000, relayKills: 6, consumerKills: 4}
	}
	return size{events: 20_000, relayKills: 30, consumerKills: 10}
}

func TestExactlyOnceHTTP(t *testing.T) {
	t.Parallel()
	runExactlyOnce(t, "http", "", "")
}

// The same with the receiver on PostgreSQL, where the consumer's requests run
// concurrently instead of taking turns on SQLite's write lock.
func TestExactlyOnceHTTPPostgres(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping the run with a PostgreSQL receiver (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	schema := "inbox_e2e_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	// The faults here are the consumer's deaths, not the database server's: a commit
	// acknowledged without waiting for the WAL flush is still durable against them.
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	runExactlyOnce(t, "http", "", u.String())
}

func TestExactlyOnceNATS(t *testing.T) {
	t.Parallel()
	url := os.Getenv("OUTBOX_NATS_URL")
	if url == "" {
		t.Skip("OUTBOX_NATS_URL is not set: skipping the test through NATS JetStream (e.g. OUTBOX_NATS_URL=nats://127.0.0.1:4222)")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stream := "INBOXE2E_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	// The shortest duplicate window JetStream allows: a relay that publishes again after
	// a kill mostly gets its message stored twice, and the inbox has to tell.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{stream + ".>"}, Storage: jetstream.FileStorage, Duplicates: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	defer js.DeleteStream(context.Background(), stream)
	if _, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "receiver", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second,
		MaxDeliver: -1, MaxAckPending: 2000,
	}); err != nil {
		t.Fatal(err)
	}
	runExactlyOnce(t, "nats", stream, "")
}

// progress is what a live run keeps changing: effects, events with an effect, events
// the outbox counts completed, and the kills done.
type progress struct{ effects, distinct, completed, relayKills, consumerKills int }

// runExactlyOnce runs the test through transport; receiverDSN names a PostgreSQL
// receiver, or "" for a SQLite one.
func runExactlyOnce(t *testing.T, transport, stream, receiverDSN string) {
	sz := runSize()
	dir := t.TempDir()
	outboxPath, receiverPath := filepath.Join(dir, "outbox.db"), cmp.Or(receiverDSN, filepath.Join(dir, "receiver.db"))
	ctx := context.Background()

	// The outbox, filled.
	odb, err := sqlite.Open(outboxPath, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close()
	if _, err := sqlite.Migrate(ctx, odb); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.New(ctx, odb, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < sz.events; i += 500 {
		var batch []*outbox.Event
		for j := i; j < min(i+500, sz.events); j++ {
			batch = append(batch, outbox.NewEvent("order.created", fmt.Sprintf("order-%d", j), ""))
		}
		if err := store.Enqueue(ctx, time.Now(), batch...); err != nil {
			t.Fatal(err)
		}
	}

	// The receiver: the inbox, the effect table (no unique key: a second effect would
	// show), and the log of every delivery that reached the consumer.
	rdb, dialect, _, err := openReceiver(receiverPath)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, err := inbox.Migrate(ctx, rdb, inbox.Config{Dialect: dialect}); err != nil {
		t.Fatal(err)
	}
	for _, ddl := range []string{
		`CREATE TABLE effects (msg_id TEXT NOT NULL)`, `CREATE INDEX effects_msg_id ON effects (msg_id)`,
		`CREATE TABLE deliveries (msg_id TEXT NOT NULL)`,
	} {
		if _, err := rdb.Exec(ddl); err != nil {
			t.Fatal(err)
		}
	}

	env := []string{outboxEnv + "=" + outboxPath, receiverEnv + "=" + receiverPath, transportEnv + "=" + transport, streamEnv + "=" + stream}
	if transport == "http" {
		env = append(env, addrEnv+"="+freeAddr(t))
	}
	h := &harness{t: t, env: env, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)), hangs: make(chan hangNotice, 1), killedAt: map[string]int{}}
	defer h.stopAll()

	started := time.Now()
	h.startConsumer(sz)
	h.relays = []*exec.Cmd{h.start("relay", "relay-0"), h.start("relay", "relay-1")}

	// Kill a relay each time another share of the events has its effect; kill the
	// consumer whenever it says it is hanging inside a message.
	nextRelayKill := 1
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()

	// The run fails when it stops moving, not after a fixed time: on a busy machine the
	// race-built children are slow but keep going, while a lost event or a stuck
	// relay stops every count below. stallTimeout is far beyond any pause of a live
	// run (a relay's lease, a consumer's restart).
	// It also stops short of go test's own -timeout, so that a slow run says where it
	// stood instead of dying in a panic.
	const stallTimeout = 2 * time.Minute
	var last progress
	lastMoved := time.Now()
	var giveUp <-chan time.Time
	if d, ok := t.Deadline(); ok {
		giveUp = time.After(time.Until(d) - 30*time.Second)
	}
	completed := 0
	for {
		select {
		case n := <-h.hangs:
			h.kill(n.cmd)
			h.consumerKills++
			h.killedAt[n.where]++
			h.startConsumer(sz)
			continue
		case <-giveUp:
			effects, distinct := counts(t, rdb)
			t.Fatalf("go test's deadline is near (after %v): %d effects of %d events, %d distinct; %d relay and %d consumer kills",
				time.Since(started).Round(time.Second), effects, sz.events, distinct, h.relayKills, h.consumerKills)
		case <-poll.C:
		}
		effects, distinct := counts(t, rdb)
		if now := (progress{effects, distinct, completed, h.relayKills, h.consumerKills}); now != last {
			last, lastMoved = now, time.Now()
		} else if time.Since(lastMoved) > stallTimeout {
			t.Fatalf("nothing moved for %v (after %v): %d effects of %d events, %d distinct, %d completed; %d relay and %d consumer kills",
				stallTimeout, time.Since(started).Round(time.Second), effects, sz.events, distinct, completed, h.relayKills, h.consumerKills)
		}
		if nextRelayKill <= sz.relayKills && distinct >= sz.events*nextRelayKill/(sz.relayKills+1) {
			i := h.rng.IntN(len(h.relays))
			h.kill(h.relays[i])
			h.relayKills++
			h.relays[i] = h.start("relay", fmt.Sprintf("relay-%d-%d", i, nextRelayKill))
			nextRelayKill++
		}
		if distinct < sz.events {
			continue
		}
		st, err := store.Stats(ctx, outbox.StatsQuery{Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		completed = st.Completed
		if st.Completed == sz.events && h.consumerKills >= sz.consumerKills && nextRelayKill > sz.relayKills {
			break
		}
		if st.GivenUp > 0 {
			t.Fatalf("outbox gave %d events up: %+v", st.GivenUp, st)
		}
	}
	elapsed := time.Since(started)
	h.stopAll()

	effects, distinct := counts(t, rdb)
	var deliveries, redelivered, missing int
	if err := rdb.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if err := rdb.QueryRow(`SELECT count(*) FROM (SELECT msg_id FROM deliveries GROUP BY msg_id HAVING count(*) > 1) r`).Scan(&redelivered); err != nil {
		t.Fatal(err)
	}
	applied := ids(t, rdb, `SELECT msg_id FROM effects`)
	for id := range ids(t, odb, `SELECT id FROM outbox_events`) {
		if !applied[id] {
			missing++
		}
	}
	t.Logf("%s to %s: %d events; %d deliveries reached the consumer, %d of them repeats, %d events delivered more than once; %d effects; %d relay kills, %d consumer kills (%d inside the transaction, %d after the commit); %s",
		transport, dialect, sz.events, deliveries, deliveries-distinct, redelivered, effects, h.relayKills, h.consumerKills, h.killedAt["tx"], h.killedAt["commit"], elapsed.Round(time.Millisecond))
	if effects != sz.events || distinct != sz.events || missing != 0 {
		t.Fatalf("%d effects of %d distinct events, %d events without an effect; want each of the %d exactly once",
			effects, distinct, missing, sz.events)
	}
	if deliveries <= effects {
		t.Fatalf("%d deliveries for %d effects: the faults caused no redelivery, so the run shows nothing", deliveries, effects)
	}
}

// openReceiver opens the receiver's database: a PostgreSQL URL (its search_path
// naming the test's schema) or a SQLite file path.
func openReceiver(dsn string) (*sql.DB, inbox.Dialect, string, error) {
	if strings.HasPrefix(dsn, "postgres://") {
		db, err := sql.Open("pgx", dsn)
		return db, inbox.Postgres, "$1", err
	}
	db, err := sqlite.Open(dsn, sqlite.OpenConfig{})
	return db, inbox.SQLite, "?", err
}

func counts(t *testing.T, db *sql.DB) (effects, distinct int) {
	t.Helper()
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT msg_id) FROM effects`).Scan(&effects, &distinct); err != nil {
		t.Fatal(err)
	}
	return effects, distinct
}

func ids(t *testing.T, db *sql.DB, query string) map[string]bool {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	set := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		set[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return set
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type hangNotice struct {
	cmd   *exec.Cmd
	where string
}

// harness starts and kills the child processes.
type harness struct {
	t                         *testing.T
	env                       []string
	rng                       *rand.Rand
	relays                    []*exec.Cmd
	consumer                  *exec.Cmd
	hangs                     chan hangNotice // a consumer that hangs inside a message
	killedAt                  map[string]int  // consumer kills by where it hung: "tx", "commit"
	relayKills, consumerKills int
	mu                        sync.Mutex
	all                       []*exec.Cmd
}

func (h *harness) start(role, name string, extra ...string) *exec.Cmd {
	h.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(append(os.Environ(), h.env...), roleEnv+"="+role, "INBOX_E2E_NAME="+name), extra...)
	cmd.Stderr = os.Stderr
	if role == "consumer" {
		out, err := cmd.StdoutPipe()
		if err != nil {
			h.t.Fatal(err)
		}
		ready := make(chan struct{})
		go func() {
			lines := bufio.NewScanner(out)
			for lines.Scan() {
				switch {
				case lines.Text() == "ready":
					close(ready)
				case strings.HasPrefix(lines.Text(), "hang "):
					h.hangs <- hangNotice{cmd, strings.Fields(lines.Text())[1]}
				}
			}
		}()
		defer func() {
			select {
			case <-ready:
			case <-time.After(30 * time.Second):
				h.t.Fatal("consumer not ready within 30s")
			}
		}()
	}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.all = append(h.all, cmd)
	h.mu.Unlock()
	return cmd
}

// startConsumer starts a consumer that, until the run has had its consumer kills,
// hangs in a message after applying a random number of them: in the middle of its
// transaction, or (every other time) after the commit, before the answer or ack.
func (h *harness) startConsumer(sz size) {
	hang := ""
	if h.consumerKills < sz.consumerKills {
		where := []string{"tx", "commit"}[h.consumerKills%2]
		share := max(sz.events/(sz.consumerKills+1), 20)
		hang = fmt.Sprintf("%s=%d:%s", hangEnv, share/2+h.rng.IntN(share/2), where)
	}
	h.consumer = h.start("consumer", "consumer", hang)
}

func (h *harness) kill(cmd *exec.Cmd) {
	h.t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		h.t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		h.t.Fatalf("child did not die of SIGKILL: %v", err)
	}
}

func (h *harness) stopAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, cmd := range h.all {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	h.all = nil
}

// runRelay is a relay process: a processor on the outbox delivering with httpsink or
// natssink, until it is killed (or SIGTERM).
func runRelay() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := sqlite.Open(os.Getenv(outboxEnv), sqlite.OpenConfig{})
	if err != nil {
		return fail(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		return fail(err)
	}
	var h outbox.Handler
	switch os.Getenv(transportEnv) {
	case "http":
		if h, err = httpsink.New(httpsink.Config{URL: "http://" + os.Getenv(addrEnv) + "/orders", Timeout: 2 * time.Second}); err != nil {
			return fail(err)
		}
	case "nats":
		nc, err := nats.Connect(cmp.Or(os.Getenv("OUTBOX_NATS_URL"), nats.DefaultURL))
		if err != nil {
			return fail(err)
		}
		if h, err = natssink.New(nc, natssink.Config{Subject: os.Getenv(streamEnv) + ".{type}", AckTimeout: 2 * time.Second}); err != nil {
			return fail(err)
		}
	}
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		Owner: os.Getenv("INBOX_E2E_NAME"), BatchSize: 50, MaxConcurrent: 8, PollInterval: 50 * time.Millisecond,
		LeaseDuration: time.Second, HandlerTimeout: 3 * time.Second, CleanupInterval: -1,
		// Retried soon and without end: a kill is never a reason to give an event up.
		Retry:  outbox.RetryPolicy{Delays: []time.Duration{50 * time.Millisecond}, MaxAttempts: 1_000_000, Jitter: -1},
		Logger: outboxtest.Discard,
	})
	if err != nil {
		return fail(err)
	}
	if err := p.Start(ctx); err != nil {
		return fail(err)
	}
	<-ctx.Done()
	_ = p.Stop(context.Background())
	return 0
}

// runConsumer is the receiving process: its effect is a row in effects, applied
// through the inbox; every delivery that reaches it is logged first, in a
// transaction of its own, so the log survives the kills.
func runConsumer() int {
	ctx := context.Background()
	db, dialect, ph, err := openReceiver(os.Getenv(receiverEnv))
	if err != nil {
		return fail(err)
	}
	ib, err := inbox.New(ctx, db, inbox.Config{Dialect: dialect})
	if err != nil {
		return fail(err)
	}
	hangAfter, hangAt := int64(-1), ""
	if v, where, ok := strings.Cut(os.Getenv(hangEnv), ":"); ok {
		hangAfter, _ = strconv.ParseInt(v, 10, 64)
		hangAt = where
	}
	var applied atomic.Int64
	var hanging atomic.Bool
	// hang blocks forever, once the consumer has applied hangAfter messages, at where;
	// so do the messages in flight beside it that come by.
	hang := func(where, id string) {
		if hangAt == where && applied.Load() >= hangAfter {
			if hanging.CompareAndSwap(false, true) {
				fmt.Printf("hang %s %s\n", where, id)
			}
			select {}
		}
	}
	logDelivery := func(id string) error {
		_, err := db.ExecContext(ctx, `INSERT INTO deliveries (msg_id) VALUES (`+ph+`)`, id)
		return err
	}
	effect := func(ctx context.Context, tx *sql.Tx, id string) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO effects (msg_id) VALUES (`+ph+`)`, id); err != nil {
			return err
		}
		hang("tx", id) // the effect written, not committed
		applied.Add(1)
		return nil
	}

	switch os.Getenv(transportEnv) {
	case "http":
		mw, err := httpinbox.New(ib, httpinbox.Config{Logger: outboxtest.Discard})
		if err != nil {
			return fail(err)
		}
		inner := mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := effect(r.Context(), httpinbox.Tx(r.Context()), r.Header.Get("Idempotency-Key")); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}))
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("Idempotency-Key")
			if err := logDelivery(id); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			inner.ServeHTTP(w, r)
			// Committed, and the answer still in net/http's buffer: not sent until we return.
			if w.Header().Get(httpinbox.ReplayedHeader) == "" {
				hang("commit", id)
			}
		})
		var l net.Listener
		for range 100 { // the killed predecessor's socket may take a moment to go
			if l, err = net.Listen("tcp", os.Getenv(addrEnv)); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			return fail(err)
		}
		fmt.Println("ready")
		return fail(http.Serve(l, handler))
	case "nats":
		nc, err := nats.Connect(cmp.Or(os.Getenv("OUTBOX_NATS_URL"), nats.DefaultURL))
		if err != nil {
			return fail(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return fail(err)
		}
		cons, err := js.Consumer(ctx, os.Getenv(streamEnv), "receiver")
		if err != nil {
			return fail(err)
		}
		c, err := natsinbox.New(ib, func(ctx context.Context, tx *sql.Tx, msg jetstream.Msg) error {
			return effect(ctx, tx, msg.Headers().Get(jetstream.MsgIDHeader))
		}, natsinbox.Config{NakDelay: 50 * time.Millisecond, Logger: outboxtest.Discard})
		if err != nil {
			return fail(err)
		}
		cc, err := cons.Consume(func(msg jetstream.Msg) {
			id := msg.Headers().Get(jetstream.MsgIDHeader)
			if err := logDelivery(id); err != nil {
				_ = msg.NakWithDelay(50 * time.Millisecond)
				return
			}
			_, _ = c.Handle(ctx, hangBeforeAck{msg, hang})
		})
		if err != nil {
			return fail(err)
		}
		defer cc.Stop()
		fmt.Println("ready")
		select {}
	}
	return fail(fmt.Errorf("unknown transport %q", os.Getenv(transportEnv)))
}

// hangBeforeAck hangs (when it is time to) after the commit, before the ack.
type hangBeforeAck struct {
	jetstream.Msg
	hang func(where, id string)
}

func (m hangBeforeAck) Ack() error {
	m.hang("commit", m.Headers().Get(jetstream.MsgIDHeader))
	return m.Msg.Ack()
}

func fail(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "e2e child:", err)
	return 1
}
