package natssink_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
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

// Thousands of events, in batches of 500, each in the stream once; all published again,
// as a relay that crashed before recording its outcomes would, the stream stores none.
// (2,000: four batches and two re-publishes of 1,000, under the sink's MaxPending. It
// was 10,000; the SQLite outbox under -race, not NATS, took most of its 30 s.)
func TestThousandsOfEventsExactlyOnce(t *testing.T) {
	t.Parallel()
	url := natsURL(t)
	nc := connect(t, url)
	st, prefix := testStream(t, nc, jetstream.MemoryStorage)
	store := sqlitetest.NewStore(t)
	const n = 2_000
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
	t.Parallel()
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

// wantFault fails the test unless err is a DestinationError of reason (and target,
// when not empty) that the processor holds (not merely suspected), and not permanent.
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

// A subject no stream captures fails as a fault of that subject only (not of NATS,
// not of the event): the events of other subjects in the same batch are delivered.
// So does a subject that Config.Stream does not capture.
func TestNoStreamIsTargetFault(t *testing.T) {
	t.Parallel()
	nc := connect(t, natsURL(t))
	st, prefix := testStream(t, nc, jetstream.MemoryStorage)
	// The user ID picks the stream: the test's own, or none.
	s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.{user_id}.{type}", AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	id, nostream := strings.TrimPrefix(prefix, "outboxtest."), "nostream"+uuid.NewString()[:8]
	events := []outbox.Event{
		{ID: uuid.NewString(), Type: "a", UserID: id, EntityID: "e1"},
		{ID: uuid.NewString(), Type: "a", UserID: nostream, EntityID: "e2"},
		{ID: uuid.NewString(), Type: "b", UserID: id, EntityID: "e3"},
	}
	errs := s.HandleBatch(context.Background(), events)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("events to the stream: %v", errs)
	}
	wantFault(t, "event to a subject no stream captures", errs[1], outbox.ReasonTargetMissing, "outboxtest."+nostream+".a")
	consumeAll(t, st, 2)

	// The subject is captured, but not by the stream the sink must publish to.
	other, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: "OUTBOXTEST_OTHER", AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	err = other.Handle(context.Background(), outbox.Event{ID: uuid.NewString(), Type: "c", EntityID: "e4"})
	wantFault(t, "event captured by another stream than Config.Stream", err, outbox.ReasonTargetMissing, prefix+".c")
}

// A stream deleted while the relay runs holds its subject's events; once it is
// created again, they are delivered.
func TestStreamDeletedAndRecreated(t *testing.T) {
	t.Parallel()
	nc := connect(t, natsURL(t))
	st, prefix := testStream(t, nc, jetstream.MemoryStorage)
	cfg := st.CachedInfo().Config
	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: cfg.Name, AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ev := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"} }
	if err := s.Handle(context.Background(), ev()); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), cfg.Name); err != nil {
		t.Fatal(err)
	}
	wantFault(t, "event to a deleted stream", s.Handle(context.Background(), ev()), outbox.ReasonTargetMissing, prefix+".t")
	if _, err := js.CreateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(context.Background(), ev()); err != nil {
		t.Fatalf("after the stream was created again: %v", err)
	}
}

// A message larger than the server's max_payload, or than the stream's max_msg_size,
// is the event's own fault: permanent. The other events of the batch go through.
func TestTooLargeIsPermanent(t *testing.T) {
	t.Parallel()
	nc := connect(t, natsURL(t))
	js, _ := jetstream.New(nc)
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	name, prefix := "OUTBOXTEST_"+id, "outboxtest."+id
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage, MaxMsgSize: 4096,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	payload := func(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n) + `"`) }
	events := []outbox.Event{
		{ID: uuid.NewString(), Type: "small", EntityID: "e1"},
		{ID: uuid.NewString(), Type: "stream", EntityID: "e2", Payload: payload(8 << 10)},              // > max_msg_size
		{ID: uuid.NewString(), Type: "server", EntityID: "e3", Payload: payload(int(nc.MaxPayload()))}, // > max_payload
		{ID: uuid.NewString(), Type: "small", EntityID: "e4"},
	}
	errs := s.HandleBatch(context.Background(), events)
	if errs[0] != nil || errs[3] != nil {
		t.Fatalf("small events: %v", errs)
	}
	for _, i := range []int{1, 2} {
		var de *outbox.DestinationError
		if !outbox.IsPermanent(errs[i]) || errors.As(errs[i], &de) {
			t.Fatalf("event %d, too large: %v, want permanent", i, errs[i])
		}
	}
}

// A publish acknowledged by nobody in time (here a plain subscriber takes the subject
// and never answers) is retried: not delivered, not the destination's fault. In a
// batch, the events acknowledged in time are delivered although the wait for the
// first one ran out the batch's time.
func TestAckTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	nc := connect(t, natsURL(t))
	st, prefix := testStream(t, nc, jetstream.MemoryStorage)
	silent := "noack" + uuid.NewString()[:8]
	sub, err := nc.SubscribeSync("outboxtest." + silent + ".>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// The user ID picks the subject: the silent subscriber's, or the stream's.
	s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.{user_id}.{type}", AckTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	unacked := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), UserID: silent, Type: "t"} }
	wantRetry(t, "publish never acknowledged", s.Handle(context.Background(), unacked()))

	// The handler's deadline ends the wait the same way, and the events of the batch
	// acknowledged before it count although it passed while the sink waited for the
	// first one.
	s, err = natssink.New(nc, natssink.Config{Subject: "outboxtest.{user_id}.{type}", AckTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	events := []outbox.Event{unacked()}
	for range 20 {
		events = append(events, outbox.Event{ID: uuid.NewString(), UserID: strings.TrimPrefix(prefix, "outboxtest."), Type: "t"})
	}
	// The deadline ends the wait for the first; it is long enough that the other 20
	// are acknowledged before it even on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	errs := s.HandleBatch(ctx, events)
	wantRetry(t, "publish past the handler deadline", errs[0])
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Fatalf("past the handler deadline: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("event %d, acknowledged before the deadline: %v", i+1, err)
		}
	}
	consumeAll(t, st, 20)
}

// A relay started while NATS is down (nats.RetryOnFailedConnect, as `outbox relay`
// connects) has never heard from a server: the sink says NATS cannot be reached and
// marks the events unavailable, instead of "headers not supported".
func TestUnreachableServerIsUnavailable(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("nats://127.0.0.1:%d", outboxtest.ServerPort(t)) // nothing listens there
	nc := connect(t, url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	// An hour: had the sink waited for acknowledgements, the bound below would show it
	// whatever the machine's load.
	s, err := natssink.New(nc, natssink.Config{AckTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errs := s.HandleBatch(context.Background(), []outbox.Event{{ID: uuid.NewString(), Type: "a"}, {ID: uuid.NewString(), Type: "b"}})
	for i, err := range errs {
		wantFault(t, fmt.Sprintf("event %d, NATS refusing connections", i), err, outbox.ReasonUnreachable, "")
		if msg := err.Error(); !strings.Contains(msg, "cannot reach NATS") || strings.Contains(msg, "headers") {
			t.Fatalf("event %d: %q, want it to say NATS cannot be reached", i, msg)
		}
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("failing took %s: the sink waited for acknowledgements that cannot come", d)
	}
}

// natsServer runs /usr/sbin/nats-server (or OUTBOX_NATS_SERVER) with JetStream stored in
// dir, configured by the file conf when set.
type natsServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	conf string
	cmd  *exec.Cmd
}

// natsServerBin returns the nats-server binary, or skips the test saying why.
func natsServerBin(t *testing.T) string {
	t.Helper()
	bin := cmp.Or(os.Getenv("OUTBOX_NATS_SERVER"), "/usr/sbin/nats-server")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no nats-server binary at %s (set OUTBOX_NATS_SERVER): %v", bin, err)
	}
	return bin
}

func startNATSServer(t *testing.T, ns *natsServer) {
	t.Helper()
	args := []string{"-a", "127.0.0.1", "-p", fmt.Sprint(ns.port), "-js", "-sd", ns.dir}
	if ns.conf != "" {
		args = append(args, "-c", ns.conf)
	}
	cmd := exec.Command(ns.bin, args...)
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

// The broker goes away in the middle of a run and comes back: every event arrives,
// exactly once, and none is given up.
func TestBrokerKilledMidRunAndRestarted(t *testing.T) {
	t.Parallel()
	bin := natsServerBin(t)
	ns := &natsServer{t: t, bin: bin, port: outboxtest.ServerPort(t), dir: t.TempDir()}
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

// Credentials: a nats-server of the test's own takes users "relay" (publish only to
// "<prefix>.ok.>") and "admin". A wrong password, or a password changed while the
// relay runs, holds delivery as a fault of the whole destination; a subject the user
// may not publish to holds that subject's events only.
func TestCredentialsRejected(t *testing.T) {
	t.Parallel()
	bin := natsServerBin(t)
	dir := t.TempDir()
	conf := dir + "/nats.conf"
	writeConf := func(relayPassword string) {
		t.Helper()
		c := `authorization {
  users = [
    {user: relay, password: "` + relayPassword + `", permissions: {
      publish: {allow: ["outboxtest.ok.>"]}, subscribe: {allow: ["_INBOX.>"]}}}
    {user: admin, password: "admin-secret"}
  ]
}
`
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("relay-secret")
	ns := &natsServer{t: t, bin: bin, port: outboxtest.ServerPort(t), dir: dir, conf: conf}
	startNATSServer(t, ns)
	t.Cleanup(ns.kill)
	addr := fmt.Sprintf("127.0.0.1:%d", ns.port)
	admin := connect(t, "nats://admin:admin-secret@"+addr)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "OUTBOXTEST", Subjects: []string{"outboxtest.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	// The options `outbox relay` connects with.
	relayOpts := []nats.Option{nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}
	ev := func() outbox.Event { return outbox.Event{ID: uuid.NewString(), Type: "t", EntityID: "e"} }

	t.Run("wrong password", func(t *testing.T) {
		nc := connect(t, "nats://relay:wrong@"+addr, relayOpts...)
		s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.ok.{type}", AckTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// The client learns of the refusal when its connection attempt is answered.
		deadline := time.Now().Add(time.Minute) // generous: a busy machine must not fail it
		err = s.Handle(context.Background(), ev())
		for !errors.Is(err, nats.ErrAuthorization) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			err = s.Handle(context.Background(), ev())
		}
		wantFault(t, "wrong password", err, outbox.ReasonCredentials, "")
	})

	t.Run("subject not permitted", func(t *testing.T) {
		nc := connect(t, "nats://relay:relay-secret@"+addr, relayOpts...)
		// The refused publish is told at AckTimeout; the permitted ones must be
		// acknowledged before it, which 3 s leaves room for on a busy machine.
		s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.{user_id}.{type}", AckTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		events := []outbox.Event{
			{ID: uuid.NewString(), Type: "a", UserID: "ok", EntityID: "e1"},
			{ID: uuid.NewString(), Type: "a", UserID: "denied", EntityID: "e2"},
			{ID: uuid.NewString(), Type: "b", UserID: "ok", EntityID: "e3"},
		}
		errs := s.HandleBatch(context.Background(), events)
		if errs[0] != nil || errs[2] != nil {
			t.Fatalf("permitted subjects: %v", errs)
		}
		wantFault(t, "subject not permitted", errs[1], outbox.ReasonCredentials, "outboxtest.denied.a")
	})

	t.Run("password changed while running", func(t *testing.T) {
		nc := connect(t, "nats://relay:relay-secret@"+addr, relayOpts...)
		s, err := natssink.New(nc, natssink.Config{Subject: "outboxtest.ok.{type}", AckTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Handle(context.Background(), ev()); err != nil {
			t.Fatal(err)
		}
		writeConf("rotated")
		if err := ns.cmd.Process.Signal(syscall.SIGHUP); err != nil { // reload: the server drops clients no longer authorized
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		err = s.Handle(context.Background(), ev())
		for !errors.Is(err, nats.ErrAuthorization) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			err = s.Handle(context.Background(), ev())
		}
		wantFault(t, "password changed", err, outbox.ReasonCredentials, "")
	})

}
