package natssink_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func natsURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("OUTBOX_NATS_URL")
	if u == "" {
		t.Skip("OUTBOX_NATS_URL is not set: skipping the test against NATS JetStream (e.g. OUTBOX_NATS_URL=nats://127.0.0.1:4222)")
	}
	return u
}

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testStream creates a stream of the test's own, capturing "<prefix>.>", and deletes it
// when the test ends. It returns the stream and the subject prefix.
func testStream(t *testing.T, nc *nats.Conn, storage jetstream.StorageType) (jetstream.Stream, string) {
	t.Helper()
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	name, prefix := "OUTBOXTEST_"+id, "outboxtest."+id
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: storage,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := js.DeleteStream(context.Background(), name); err != nil && !nc.IsClosed() {
			t.Logf("delete stream %s: %v", name, err)
		}
	})
	return st, prefix
}

// consumeAll reads every message of the stream and returns how often each
// Nats-Msg-Id occurs, checking that the envelope carries the same ID.
func consumeAll(t *testing.T, st jetstream.Stream, want int) map[string]int {
	t.Helper()
	ctx := context.Background()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(info.State.Msgs); got != want {
		t.Errorf("stream holds %d messages, want %d", got, want)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for read := 0; read < int(info.State.Msgs); {
		batch, err := cons.Fetch(min(1000, int(info.State.Msgs)-read), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(jetstream.MsgIDHeader)
			var env sink.Envelope
			if err := json.Unmarshal(m.Data(), &env); err != nil || env.ID != id {
				t.Fatalf("message %q: envelope %s (%v) does not carry its ID", id, m.Data(), err)
			}
			if !strings.HasSuffix(m.Subject(), "."+env.Type) {
				t.Fatalf("event of type %s on subject %s", env.Type, m.Subject())
			}
			seen[id]++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("stream ran dry after %d of %d messages", read, info.State.Msgs)
		}
		read += n
	}
	return seen
}

func checkExactlyOnce(t *testing.T, seen map[string]int, ids map[string]bool) {
	t.Helper()
	missing, dup := 0, 0
	for id := range ids {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing > 0 || dup > 0 || len(seen) != len(ids) {
		t.Fatalf("of %d events: %d missing, %d more than once, %d messages not from an event", len(ids), missing, dup, len(seen)-len(ids)+missing)
	}
}

func TestTenThousandEventsExactlyOnce(t *testing.T) {
	url := natsURL(t)
	nc := connect(t, url)
	st, prefix := testStream(t, nc, jetstream.MemoryStorage)
	store := sqlitetest.NewStore(t)
	const n = 10_000
	ids := outboxtest.EnqueueN(t, store, n)

	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: st.CachedInfo().Config.Name})
	if err != nil {
		t.Fatal(err)
	}
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
	checkExactlyOnce(t, consumeAll(t, st, n), ids)

	// Publish every event again, as a relay that crashed before recording its
	// outcomes would: the stream acknowledges each and stores none.
	all, err := store.List(context.Background(), outbox.Filter{Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	for start := 0; start < len(all); start += 1000 {
		for i, err := range s.HandleBatch(context.Background(), all[start:min(start+1000, len(all))]) {
			if err != nil {
				t.Fatalf("re-publish of event %d: %v", start+i, err)
			}
		}
	}
	checkExactlyOnce(t, consumeAll(t, st, n), ids)

	// And the stream says so itself.
	js, _ := jetstream.New(nc)
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: prefix + ".x", Header: nats.Header{jetstream.MsgIDHeader: {all[0].ID}}})
	if err != nil || !ack.Duplicate {
		t.Fatalf("publishing an event ID again: ack %+v, %v; want a duplicate", ack, err)
	}
}

func TestSubjectTemplate(t *testing.T) {
	nc := &nats.Conn{} // never used: New only builds
	tests := []struct {
		template string
		e        outbox.Event
		want     string
		err      string
	}{
		{"", outbox.Event{Type: "progressEntry"}, "outbox.progressEntry", ""},
		{"fitiq.{user_id}.{type}", outbox.Event{Type: "progressEntry", UserID: "a.b c*>"}, "fitiq.a_b_c__.progressEntry", ""},
		{"fitiq.{user_id}.{entity_id}", outbox.Event{EntityID: "e1"}, "fitiq._.e1", ""},
		{"outbox.{kind}", outbox.Event{}, "", "unknown placeholder {kind}"},
		{"outbox.{type", outbox.Event{}, "", "unclosed"},
		{"outbox..{type}", outbox.Event{}, "", "empty token"},
		{"outbox.*", outbox.Event{}, "", "wildcard"},
		{"outbox.>", outbox.Event{}, "", "wildcard"},
		{"out box.{type}", outbox.Event{}, "", "white space"},
		{".{type}", outbox.Event{}, "", "empty token"},
	}
	for _, tt := range tests {
		s, err := natssink.New(nc, natssink.Config{Subject: tt.template})
		if tt.err != "" {
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("template %q: New = %v, want an error about %q", tt.template, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("template %q: %v", tt.template, err)
			continue
		}
		if got := s.Subject(tt.e); got != tt.want {
			t.Errorf("template %q: subject %q, want %q", tt.template, got, tt.want)
		}
	}
}

// A subject no stream captures: the publish fails, retryably, instead of vanishing.
func TestNoStreamIsRetryableFailure(t *testing.T) {
	nc := connect(t, natsURL(t))
	s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.nostream." + uuid.NewString()[:8] + ".{type}", AckTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Handle(context.Background(), outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"})
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("Handle = %v, want a retryable error", err)
	}
}

// natsServer runs /usr/sbin/nats-server (or OUTBOX_NATS_SERVER) with JetStream stored in dir.
type natsServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

func startNATSServer(t *testing.T, ns *natsServer) {
	t.Helper()
	cmd := exec.Command(ns.bin, "-a", "127.0.0.1", "-p", fmt.Sprint(ns.port), "-js", "-sd", ns.dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	ns.cmd = cmd
	outboxtest.AwaitLine(t, stderr, "Server is ready", 30*time.Second)
}

func (ns *natsServer) kill() {
	_ = ns.cmd.Process.Kill() // SIGKILL: no goodbye to the clients
	_ = ns.cmd.Wait()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The broker goes away in the middle of a run and comes back: every event arrives,
// exactly once, and none is given up.
func TestBrokerKilledMidRunAndRestarted(t *testing.T) {
	bin := cmp.Or(os.Getenv("OUTBOX_NATS_SERVER"), "/usr/sbin/nats-server")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no nats-server binary at %s (set OUTBOX_NATS_SERVER): %v", bin, err)
	}
	ns := &natsServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	startNATSServer(t, ns)
	t.Cleanup(ns.kill)
	url := fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
	nc := connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	st, prefix := testStream(t, nc, jetstream.FileStorage)

	const n = 2000
	store := sqlitetest.NewStore(t)
	ids := outboxtest.EnqueueN(t, store, n)
	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	obs := outboxtest.NewRecorder(n, n/2)
	// A retry budget (50 attempts, 100ms apart) far longer than the outage.
	p, err := outbox.NewProcessor(store, s, outbox.Config{
		BatchSize: 100, PollInterval: 50 * time.Millisecond, Observer: obs, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{100 * time.Millisecond}, MaxAttempts: 50, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	defer obs.Resume() // a failed wait must not leave the processor held in the observer

	obs.Wait(t, obs.Paused(), 2*time.Minute, "half the events")
	ns.kill() // halfway: the relay is stopped inside a batch until the broker is gone
	obs.Resume()
	obs.Wait(t, obs.FirstFailure(), 2*time.Minute, "a delivery to fail while the broker is down")
	startNATSServer(t, ns)
	obs.Wait(t, obs.AllDelivered(), 2*time.Minute, "every event to be delivered after the restart")
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	stats, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n || stats.GivenUp != 0 {
		t.Fatalf("after the outage: %d completed, %d given up; want %d and 0", stats.Completed, stats.GivenUp, n)
	}
	t.Logf("outage: %d failed attempts retried, %d could not reach the broker (not counted), none given up", obs.Failed.Load(), obs.Unavailable.Load())
	checkExactlyOnce(t, consumeAll(t, st, n), ids)
}
