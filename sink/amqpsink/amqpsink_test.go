package amqpsink_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func amqpURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("OUTBOX_AMQP_URL")
	if u == "" {
		t.Skip("OUTBOX_AMQP_URL is not set: skipping the test against RabbitMQ (e.g. OUTBOX_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/)")
	}
	return u
}

// testQueue declares a durable queue of the test's own, bound to amq.topic with
// "<prefix>.#", and deletes it when the test ends. It returns the queue name, the
// routing-key prefix, and a channel to read it with.
func testQueue(t *testing.T, url string) (string, string, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	queue, prefix := "outboxtest."+id, "outboxtest."+id
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			t.Logf("delete queue %s: %v", queue, err)
		}
	})
	if err := ch.QueueBind(queue, prefix+".#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	return queue, prefix, ch
}

// consumeAll reads every message in the queue and counts each message-id, checking
// the message against its envelope.
func consumeAll(t *testing.T, ch *amqp.Channel, queue string) map[string]int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range q.Messages {
		var d amqp.Delivery
		select {
		case d = <-deliveries:
		case <-time.After(30 * time.Second):
			t.Fatalf("queue ran dry after %d of %d messages", len(seen), q.Messages)
		}
		var env sink.Envelope
		if err := json.Unmarshal(d.Body, &env); err != nil || env.ID != d.MessageId {
			t.Fatalf("message %q: envelope %s (%v) does not carry its ID", d.MessageId, d.Body, err)
		}
		if d.DeliveryMode != amqp.Persistent || d.ContentType != "application/json" || d.Type != env.Type {
			t.Fatalf("message %s: delivery mode %d, content type %q, type %q", d.MessageId, d.DeliveryMode, d.ContentType, d.Type)
		}
		seen[d.MessageId]++
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	return seen
}

// checkAllPresent asserts at-least-once: every event's ID is in the queue, and nothing else.
func checkAllPresent(t *testing.T, seen map[string]int, ids map[string]bool) {
	t.Helper()
	missing, dups := 0, 0
	for id := range ids {
		if seen[id] == 0 {
			missing++
		}
		dups += max(seen[id]-1, 0)
	}
	for id := range seen {
		if !ids[id] {
			t.Fatalf("message %s is from no event", id)
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d events missing from the queue", missing, len(ids))
	}
	t.Logf("%d events, all present; %d duplicate deliveries", len(ids), dups)
}

func newSink(t *testing.T, cfg amqpsink.Config) *amqpsink.Sink {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	s, err := amqpsink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Thousands of events through a processor in batches of 500: every one in the queue.
// (2,000: four batches, two of the sink's publishing chunks of 1,000; what is checked
// holds at any size. It was 10,000; the SQLite outbox under -race took most of its time.)
func TestThousandsOfEventsAtLeastOnce(t *testing.T) {
	t.Parallel()
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	store := sqlitetest.NewStore(t)
	const n = 2_000
	ids := outboxtest.EnqueueN(t, store, n)
	s := newSink(t, amqpsink.Config{URL: url, RoutingKey: prefix + ".{type}"})
	p, err := outbox.NewProcessor(store, s, outbox.Config{BatchSize: 500, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	stats, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n {
		t.Fatalf("completed %d of %d (stats %+v)", stats.Completed, n, stats)
	}
	checkAllPresent(t, consumeAll(t, ch, queue), ids)
}

// wantFault fails the test unless err is a DestinationError of reason and target
// that the processor holds (not merely suspected), and not permanent.
func wantFault(t *testing.T, what string, err error, reason, target string) {
	t.Helper()
	var de *outbox.DestinationError
	if !errors.As(err, &de) || de.Reason != reason || de.Target != target || de.Suspected ||
		!outbox.IsUnavailable(err) || outbox.IsPermanent(err) {
		t.Fatalf("%s: %v (%+v), want a destination fault %q, target %q", what, err, de, reason, target)
	}
}

// wantRetry fails the test unless err is a plain retryable failure: neither a fault
// of the destination nor permanent.
func wantRetry(t *testing.T, what string, err error) {
	t.Helper()
	var de *outbox.DestinationError
	if err == nil || errors.As(err, &de) || outbox.IsUnavailable(err) || outbox.IsPermanent(err) {
		t.Fatalf("%s: %v, want a retryable failure of the event", what, err)
	}
}

// Mandatory publishing: a routing key no queue is bound to fails the event instead
// of dropping the message; the confirm alone is not taken as delivery. It is a fault
// of that routing key (the queue is missing), held for events going there only; once
// a queue is bound, they are delivered.
func TestUnroutableIsTargetFault(t *testing.T) {
	t.Parallel()
	url := amqpURL(t)
	queue, prefix, ch := testQueue(t, url)
	s := newSink(t, amqpsink.Config{URL: url, RoutingKey: "{type}"})
	unbound := "outboxtest-unbound-" + uuid.NewString()
	events := []outbox.Event{
		{ID: uuid.NewString(), Type: prefix + ".routed", EntityID: "e1"},
		{ID: uuid.NewString(), Type: unbound, EntityID: "e2"},
		{ID: uuid.NewString(), Type: prefix + ".routed", EntityID: "e3"},
	}
	errs := s.HandleBatch(context.Background(), events)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("routed events failed: %v", errs)
	}
	wantFault(t, "unroutable event", errs[1], outbox.ReasonTargetMissing, "amq.topic/"+unbound)
	if !strings.Contains(errs[1].Error(), "NO_ROUTE") {
		t.Fatalf("unroutable event: %v, want the broker's NO_ROUTE named", errs[1])
	}
	seen := consumeAll(t, ch, queue)
	if len(seen) != 2 || seen[events[0].ID] != 1 || seen[events[2].ID] != 1 {
		t.Fatalf("queue holds %v", seen)
	}

	// The queue appears: the held event goes through.
	if err := ch.QueueBind(queue, unbound, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(context.Background(), events[1]); err != nil {
		t.Fatalf("after a queue was bound: %v", err)
	}
}

// An exchange that does not exist closes the channel: the events are held as a fault
// of that exchange. The sink opens a new channel on the same connection for the next
// batch, which goes through once the exchange exists; deleting it and creating it
// again does the same.
func TestMissingExchangeIsTargetFaultThenRecovers(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	queue, prefix, ch := testQueue(t, raw)
	u, _ := url.Parse(raw)
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	exchange := "outboxtest-missing-" + uuid.NewString()
	s := newSink(t, amqpsink.Config{URL: u.String(), Exchange: exchange, RoutingKey: prefix + ".{type}"})
	ev := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"} }
	for i, err := range s.HandleBatch(context.Background(), []outbox.Event{ev(), ev(), ev()}) {
		wantFault(t, fmt.Sprintf("event %d to a missing exchange", i), err, outbox.ReasonTargetMissing, exchange)
	}
	wantFault(t, "again", s.Handle(context.Background(), ev()), outbox.ReasonTargetMissing, exchange)

	create := func() {
		t.Helper()
		if err := ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(queue, prefix+".#", exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	create()
	t.Cleanup(func() { _ = ch.ExchangeDelete(exchange, false, false) })
	if err := s.Handle(context.Background(), ev()); err != nil {
		t.Fatalf("once the exchange exists: %v", err)
	}
	if err := ch.ExchangeDelete(exchange, false, false); err != nil {
		t.Fatal(err)
	}
	wantFault(t, "exchange deleted", s.Handle(context.Background(), ev()), outbox.ReasonTargetMissing, exchange)
	create()
	if err := s.Handle(context.Background(), ev()); err != nil {
		t.Fatalf("once the exchange exists again: %v", err)
	}
	if n := px.accepted.Load(); n != 1 {
		t.Fatalf("the sink connected %d times; want one connection, its channel replaced", n)
	}
}

// Credentials the broker refuses, or a virtual host it does not have, hold delivery
// as faults of the whole destination, named.
func TestCredentialsRefusedIsDestinationFault(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	u, _ := url.Parse(raw)
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	s := newSink(t, amqpsink.Config{URL: u.String()})
	for i, err := range s.HandleBatch(context.Background(), []outbox.Event{{ID: "a", Type: "t"}, {ID: "b", Type: "t"}}) {
		wantFault(t, fmt.Sprintf("event %d, wrong password", i), err, outbox.ReasonCredentials, "")
		if strings.Contains(err.Error(), "not-the-password") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}

	u, _ = url.Parse(raw)
	u.Path = "/outboxtest-no-such-vhost"
	s = newSink(t, amqpsink.Config{URL: u.String()})
	wantFault(t, "no such virtual host", s.Handle(context.Background(), outbox.Event{ID: "c", Type: "t"}), "connection not allowed", "")
}

// A queue that refuses more messages (x-overflow reject-publish) nacks them: the
// events are retried, not delivered and not the destination's fault.
func TestNackIsRetryable(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	conn, err := amqp.Dial(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := "outboxtest.full." + uuid.NewString()[:8]
	if _, err := ch.QueueDeclare(queue, false, true, false, false, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, queue, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, amqpsink.Config{URL: raw, RoutingKey: queue})
	errs := s.HandleBatch(context.Background(), []outbox.Event{{ID: uuid.NewString(), Type: "t"}, {ID: uuid.NewString(), Type: "t"}})
	if errs[0] != nil {
		t.Fatalf("the message the queue had room for: %v", errs[0])
	}
	wantRetry(t, "the message the queue nacked", errs[1])
}

// rabbitMQ starts a RabbitMQ node of the test's own (the rabbitmq-server script of
// OUTBOX_RABBITMQ_SERVER, default /usr/lib/rabbitmq/bin/rabbitmq-server) with the
// given rabbitmq.conf lines, and returns its URL; it skips the test when there is no
// such script. The node is killed when the test ends.
func rabbitMQ(t *testing.T, conf string) string {
	t.Helper()
	bin := cmp.Or(os.Getenv("OUTBOX_RABBITMQ_SERVER"), "/usr/lib/rabbitmq/bin/rabbitmq-server")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no rabbitmq-server at %s (set OUTBOX_RABBITMQ_SERVER): %v", bin, err)
	}
	dir := t.TempDir()
	port, distPort := outboxtest.ServerPort(t), outboxtest.ServerPort(t)
	conf = fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n%s\n", port, conf)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+dir, // the node's own Erlang cookie
		"RABBITMQ_NODENAME=outboxtest-"+uuid.NewString()[:8]+"@localhost",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", distPort),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_LOGS=-",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the node and its helpers, killed together
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rabbitmq-server: %v", err)
	}
	w.Close()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		out.Close()
	})
	outboxtest.AwaitLine(t, out, "Server startup complete", 2*time.Minute)
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)
}

// A message larger than the broker's max_message_size is the event's own fault:
// permanent. The broker closes the channel over it; the other events of the batch,
// published on that channel and not confirmed, go again on a new one and are
// delivered. (A RabbitMQ node of the test's own, with a 64 KiB limit.)
func TestTooLargeIsPermanentOthersDelivered(t *testing.T) {
	t.Parallel()
	raw := rabbitMQ(t, "max_message_size = 65536")
	queue, prefix, ch := testQueue(t, raw)
	s := newSink(t, amqpsink.Config{URL: raw, RoutingKey: prefix + ".{type}"})
	big := json.RawMessage(`"` + strings.Repeat("x", 100<<10) + `"`)
	ev := func(payload json.RawMessage) outbox.Event {
		return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e", Payload: payload}
	}
	events := []outbox.Event{ev(nil), ev(nil), ev(big), ev(nil), ev(big), ev(nil)}
	errs := s.HandleBatch(context.Background(), events)
	ids := map[string]bool{}
	for i, err := range errs {
		if events[i].Payload != nil {
			var de *outbox.DestinationError
			if !outbox.IsPermanent(err) || errors.As(err, &de) || !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("event %d, too large: %v, want permanent", i, err)
			}
			t.Logf("event %d: %v", i, err)
			continue
		}
		if err != nil {
			t.Fatalf("event %d, small: %v", i, err)
		}
		ids[events[i].ID] = true
	}
	if err := s.Handle(context.Background(), ev(nil)); err != nil {
		t.Fatalf("the next batch: %v", err)
	}
	seen := consumeAll(t, ch, queue)
	for id := range ids {
		if seen[id] == 0 {
			t.Fatalf("small event %s missing from the queue (it holds %v)", id, seen)
		}
	}
}

// proxy forwards TCP connections to target until cut, which drops every connection
// through it at once, as a network failure would.
type proxy struct {
	ln       net.Listener
	target   string
	accepted atomic.Int32
	held     atomic.Bool // while set, nothing flows from the broker to the client
	mu       sync.Mutex
	conns    []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				for p.held.Load() && err == nil {
					time.Sleep(time.Millisecond) // a stalled network; the test releases it
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	n := len(p.conns) / 2
	p.conns = nil
	return n
}

// The connection to the broker drops in the middle of a run: the sink reconnects and
// every event arrives; none is given up.
func TestDroppedConnectionReconnects(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	queue, prefix, ch := testQueue(t, raw)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()

	const n = 2000
	store := sqlitetest.NewStore(t)
	ids := outboxtest.EnqueueN(t, store, n)
	s := newSink(t, amqpsink.Config{URL: u.String(), RoutingKey: prefix + ".{type}", ConfirmTimeout: 2 * time.Second})
	obs := outboxtest.NewRecorder(n, n/2)
	p, err := outbox.NewProcessor(store, s, outbox.Config{
		BatchSize: 100, PollInterval: 50 * time.Millisecond, Observers: []outbox.Observer{obs}, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{100 * time.Millisecond}, MaxAttempts: 50, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	defer obs.Resume()
	obs.Wait(t, obs.Paused(), 2*time.Minute, "half the events")
	if cut := px.cut(); cut == 0 {
		t.Fatal("no connection went through the proxy")
	}
	obs.Resume()
	obs.Wait(t, obs.AllDelivered(), 2*time.Minute, "every event to be delivered after the connection dropped")
	if px.accepted.Load() < 2 {
		t.Fatalf("the sink connected %d times; want a reconnection", px.accepted.Load())
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stats, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n || stats.GivenUp != 0 {
		t.Fatalf("%d completed, %d given up; want %d and 0", stats.Completed, stats.GivenUp, n)
	}
	t.Logf("%d failed attempts retried, %d could not reach the broker (not counted) after the drop", obs.Failed.Load(), obs.Unavailable.Load())
	checkAllPresent(t, consumeAll(t, ch, queue), ids)
}

// The connection drops after the batch went out and before the broker confirmed it
// (a broker restart, a network cut): the events are held as an outage, not retried
// against their attempts; the next batch goes out on a new connection.
func TestConnectionLostBeforeConfirmIsUnavailable(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	queue, prefix, ch := testQueue(t, raw)
	u, _ := url.Parse(raw)
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	s := newSink(t, amqpsink.Config{URL: u.String(), RoutingKey: prefix + ".{type}", ConfirmTimeout: 10 * time.Second})
	ev := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"} }
	if err := s.Handle(context.Background(), ev()); err != nil { // connected
		t.Fatal(err)
	}
	px.held.Store(true) // the confirms are held back, then the connection is cut
	go func() {
		time.Sleep(200 * time.Millisecond)
		px.cut()
		px.held.Store(false)
	}()
	batch := []outbox.Event{ev(), ev(), ev()}
	for i, err := range s.HandleBatch(context.Background(), batch) {
		wantFault(t, fmt.Sprintf("event %d, connection lost before its confirm", i), err, outbox.ReasonUnreachable, "")
	}
	if errs := s.HandleBatch(context.Background(), batch); errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("on a new connection: %v", errs)
	}
	seen := consumeAll(t, ch, queue)
	for _, e := range batch {
		if seen[e.ID] == 0 {
			t.Fatalf("event %s missing", e.ID)
		}
	}
}

// Confirms that do not come in time fail the batch, retryably; the sink drops the
// channel they were owed on and the next batch goes out on a new connection.
func TestConfirmTimeoutFailsBatchThenRecovers(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	queue, prefix, ch := testQueue(t, raw)
	u, _ := url.Parse(raw)
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	// The stalled batch waits all of it; the batches before and after must be confirmed
	// within it, which 2 s leaves room for on a busy machine.
	s := newSink(t, amqpsink.Config{URL: u.String(), RoutingKey: prefix + ".{type}", ConfirmTimeout: 2 * time.Second})
	ev := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"} }
	if err := s.Handle(context.Background(), ev()); err != nil { // connected
		t.Fatal(err)
	}
	px.held.Store(true)
	stalled := []outbox.Event{ev(), ev(), ev()}
	for i, err := range s.HandleBatch(context.Background(), stalled) {
		if err == nil || outbox.IsPermanent(err) || !strings.Contains(err.Error(), "no confirm within") {
			t.Fatalf("event %d with confirms withheld: %v, want a retryable timeout", i, err)
		}
	}
	px.held.Store(false)
	px.cut()
	if err := s.HandleBatch(context.Background(), stalled); err[0] != nil || err[1] != nil || err[2] != nil {
		t.Fatalf("after the stall: %v", err)
	}
	if px.accepted.Load() != 2 {
		t.Fatalf("%d connections, want 2", px.accepted.Load())
	}
	seen := consumeAll(t, ch, queue)
	for _, e := range stalled {
		if seen[e.ID] == 0 {
			t.Fatalf("event %s missing after retry", e.ID)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  amqpsink.Config
		want string
	}{
		{"no URL", amqpsink.Config{}, "URL must not be empty"},
		{"bad URL", amqpsink.Config{URL: "http://x"}, "URL"},
		{"bad template", amqpsink.Config{URL: "amqp://x", RoutingKey: "outbox.{nope}"}, "unknown placeholder {nope}"},
		{"negative timeout", amqpsink.Config{URL: "amqp://x", ConfirmTimeout: -time.Second}, "ConfirmTimeout must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := amqpsink.New(tt.cfg)
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

// A broker that cannot be reached (nothing listens on its port) makes every event of
// the batch unavailable: an outage, which the processor does not count against them.
func TestUnreachableBrokerIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := amqpsink.New(amqpsink.Config{URL: "amqp://guest:guest@" + addr + "/", Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errs := s.HandleBatch(context.Background(), []outbox.Event{{ID: "a", Type: "t"}, {ID: "b", Type: "t"}})
	for i, err := range errs {
		wantFault(t, fmt.Sprintf("event %d", i), err, outbox.ReasonUnreachable, "")
	}
}
