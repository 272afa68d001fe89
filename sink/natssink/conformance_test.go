package natssink_test

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against NATS
// JetStream: OUTBOX_NATS_URL for every row but credentials, which needs a server with
// authorization of its own. Each row has a stream and subjects of its own, and the
// sink's connection goes through a sinktest.Proxy (and, where the acknowledgements
// must come late, a link that delays them) for the faults of the wire.
func TestConformance(t *testing.T) {
	t.Parallel()
	raw := natsURL(t)
	u, err := neturl.Parse(raw)
	if err != nil {
		t.Fatalf("OUTBOX_NATS_URL: %v", err)
	}
	admin := connect(t, raw)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	h := &natsHarness{url: u, js: js, run: strings.ReplaceAll(uuid.NewString()[:13], "-", "")}
	sinktest.Run(t, sinktest.Harness{Name: "nats", Dedup: true, Setup: h.setup}, h.want(),
		sinktest.Parallel(), sinktest.HandlerTimeout(conformanceTimeout))
}

// conformanceTimeout is the handler timeout of the suite's deliveries. Above
// sinktest's default: a publish no stream answers is retried twice by the client,
// 250ms apart, before it fails as "no stream" (a target fault), and that must come
// within the handler's time even on a loaded machine.
const conformanceTimeout = 2 * time.Second

// want is what the sink does in each row; see the package documentation.
func (h *natsHarness) want() map[sinktest.Fault]sinktest.Verdict {
	return map[sinktest.Fault]sinktest.Verdict{
		sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// On an open connection: the client notices only by its pings (every 2 minutes),
		// so the publish waits out the handler timeout. A relay that starts while
		// blackholed is held instead (its connect times out).
		sinktest.FaultBlackholed: {Class: sinktest.Retry},
		// The acknowledgements are lost with the connection; the events go again and the
		// stream drops the copies (Nats-Msg-Id).
		sinktest.FaultRestarted:       {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		sinktest.FaultCredentials:     {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
		sinktest.FaultTargetMissing:   {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.subject(sinktest.FaultTargetMissing)},
		sinktest.FaultTargetRecreated: {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.subject(sinktest.FaultTargetRecreated)},
		sinktest.FaultTooLarge:        {Class: sinktest.GivenUp},
		// The stream refuses the one message (its subject is full): that event only.
		sinktest.FaultOneRejected:     {Class: sinktest.Retry},
		sinktest.FaultSlowAck:         {Class: sinktest.Retry},
		sinktest.FaultCutAfterRequest: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// Garbage, NUL bytes and megabytes where the acknowledgement belongs.
		sinktest.FaultHostileAnswers: {Class: sinktest.Retry},
	}
}

type natsHarness struct {
	url *neturl.URL
	js  jetstream.JetStream // on a connection of its own, straight to the server
	run string              // names this run's streams and subjects
}

// names returns the stream and the subject prefix of row f.
func (h *natsHarness) names(f sinktest.Fault) (stream, prefix string) {
	return "OUTBOXCONF_" + h.run + "_" + string(f), "outboxconf." + h.run + "." + string(f)
}

// subject is where row f's events go with the subject template "<prefix>.{type}".
func (h *natsHarness) subject(f sinktest.Fault) string {
	_, prefix := h.names(f)
	return prefix + "." + strings.ReplaceAll(sinktest.EventType, ".", "_")
}

// relayOptions are the options `outbox relay` connects with. Its reconnect wait (1s)
// keeps the client reconnecting while the sink classifies what a dropped connection
// failed.
func relayOptions() []nats.Option {
	return []nats.Option{nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second)}
}

// oddEntity is the EntityID of the event Case.Odd names: the suite's events carry
// "entity-<index>" and the odd one is the second of the batch. A stream tells
// messages apart by subject only, so the rows about one event route by entity.
const oddEntity = "entity-1"

func (h *natsHarness) setup(t *testing.T, c sinktest.Case) sinktest.Setup {
	if c.Fault == sinktest.FaultCredentials {
		return h.setupCredentials(t)
	}
	stream, prefix := h.names(c.Fault)
	d := &natsDest{js: h.js, cfg: jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: 2 * time.Minute,
	}}
	t.Cleanup(func() { d.delete(t) })
	cfg := natssink.Config{Subject: prefix + ".{type}", Stream: stream}
	switch c.Fault {
	case sinktest.FaultTooLarge:
		d.cfg.MaxMsgSize = 4096
	case sinktest.FaultOneRejected:
		// One message per subject, a new one refused: the odd event's subject already
		// holds one, until Fix purges it.
		d.cfg.MaxMsgsPerSubject, d.cfg.Discard, d.cfg.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
		cfg.Subject = prefix + ".{entity_id}"
	}
	if c.Fault != sinktest.FaultTargetMissing && c.Fault != sinktest.FaultHostileAnswers {
		if err := d.create(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	upstream := h.url.Host
	var slow *link
	switch c.Fault {
	case sinktest.FaultRestarted, sinktest.FaultSlowAck, sinktest.FaultCutAfterRequest:
		slow = startLink(t, upstream)
		upstream = slow.Addr()
	}
	proxy := sinktest.StartProxy(t, upstream)
	u := *h.url
	u.Host = proxy.Addr()
	nc := connect(t, u.String(), relayOptions()...)
	s, err := natssink.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	setup := sinktest.Setup{Sink: s, Held: d.Held}
	set := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return proxy.Set(m) }
	}

	switch c.Fault {
	case sinktest.FaultRefused:
		setup.Inject = func(ctx context.Context) error {
			if err := proxy.Set(sinktest.ModeRefuse); err != nil {
				return err
			}
			// The connection was reset; wait until the client has seen it, as it has
			// by a relay's next batch.
			for nc.Status() == nats.CONNECTED {
				select {
				case <-ctx.Done():
					return fmt.Errorf("the client did not notice the reset: %w", ctx.Err())
				case <-time.After(time.Millisecond):
				}
			}
			return nil
		}
		setup.Fix = set(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		setup.Inject, setup.Fix = set(sinktest.ModeBlackhole), set(sinktest.ModePass)
	case sinktest.FaultRestarted:
		// The acknowledgements come 200ms late, so that the restart (once the stream
		// holds one event of the batch) catches them on the way. The restart drops
		// them, and the connection that follows is not slow.
		slow.SetDelay(200 * time.Millisecond)
		setup.Inject = func(context.Context) error {
			slow.SetDelay(0)
			return proxy.Set(sinktest.ModeRestart)
		}
	case sinktest.FaultTargetMissing:
		setup.Fix = d.create
	case sinktest.FaultTargetRecreated:
		setup.Inject, setup.Fix = d.remove, d.create
	case sinktest.FaultTooLarge:
		setup.MaxMessageBytes = int(d.cfg.MaxMsgSize)
	case sinktest.FaultOneRejected:
		full := prefix + "." + oddEntity
		if _, err := h.js.Publish(t.Context(), full, []byte(`{}`), jetstream.WithMsgID("prefill-"+uuid.NewString())); err != nil {
			t.Fatalf("fill %s: %v", full, err)
		}
		setup.Fix = func(ctx context.Context) error {
			st, err := h.js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			return st.Purge(ctx, jetstream.WithPurgeSubject(full))
		}
	case sinktest.FaultSlowAck:
		// The stream keeps each message at once; its acknowledgement reaches the sink
		// after the handler timeout.
		setup.Inject = func(context.Context) error { slow.SetDelay(conformanceTimeout * 3 / 2); return nil }
		setup.Fix = func(context.Context) error { slow.SetDelay(0); return nil }
	case sinktest.FaultCutAfterRequest:
		// The answer comes 200ms late, so that it cannot slip through between the
		// request going out and the cut.
		setup.Inject = func(context.Context) error {
			slow.SetDelay(200 * time.Millisecond)
			return proxy.Set(sinktest.ModeCut)
		}
		setup.Fix = func(context.Context) error {
			slow.SetDelay(0)
			return proxy.Set(sinktest.ModePass)
		}
	case sinktest.FaultHostileAnswers:
		// No stream yet: a responder on the subject answers each publish in JetStream's
		// place, with hostileAcks in turn. Fix takes it away and creates the stream.
		var n atomic.Int64
		sub, err := d.nc().Subscribe(prefix+".>", func(m *nats.Msg) {
			_ = m.Respond(hostileAcks[int(n.Add(1)-1)%len(hostileAcks)])
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.nc().Flush(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		setup.Fix = func(ctx context.Context) error {
			if err := sub.Unsubscribe(); err != nil {
				return err
			}
			return d.create(ctx) // over the same connection: after the unsubscribe
		}
	}
	return setup
}

// hostileAcks answer a publish in place of JetStream: not JSON, an API error whose
// description holds NUL bytes, control sequences, markup and invalid UTF-8, half a
// megabyte of junk, and an acknowledgement naming no stream.
var hostileAcks = [][]byte{
	[]byte("\x00\xff\xfe NOT JSON \x1b[31m<script>alert(1)</script>\xc3\x28"),
	[]byte(`{"error":{"code":503,"err_code":10999,"description":"` +
		strings.Repeat("\\u0000\xff\xfe\\u001b[31m<script>alert(1)</script>\xc3\x28 ", 400) + `"}}`),
	[]byte(strings.Repeat("\x00\xff\xfe\x1b[31m<script>", 512<<10/16)),
	[]byte(`{"stream":"","seq":0}`),
}

// setupCredentials sets up the credentials row on a nats-server of the row's own,
// whose user "relay" has had its password changed: the sink connects with the old
// one. Fix gives the user the old password back (a configuration reload).
func (h *natsHarness) setupCredentials(t *testing.T) sinktest.Setup {
	bin := os.Getenv("OUTBOX_NATS_SERVER")
	if bin == "" {
		bin = "/usr/sbin/nats-server"
	}
	if _, err := os.Stat(bin); err != nil {
		return sinktest.Setup{NotApplicable: fmt.Sprintf("needs a nats-server of its own, with authorization, and there is no binary at %s (set OUTBOX_NATS_SERVER)", bin)}
	}
	dir := t.TempDir()
	conf := dir + "/nats.conf"
	writeConf := func(relayPassword string) error {
		// JetStream is set up here rather than by flags: a reload of a file without it
		// would shut JetStream down.
		c := `jetstream {store_dir: "` + dir + `/js"}
authorization {
  users = [
    {user: relay, password: "` + relayPassword + `", permissions: {
      publish: {allow: ["outboxconf.>"]}, subscribe: {allow: ["_INBOX.>"]}}}
    {user: admin, password: "admin-secret"}
  ]
}
`
		return os.WriteFile(conf, []byte(c), 0o600)
	}
	if err := writeConf("rotated"); err != nil {
		t.Fatal(err)
	}
	ns := &natsServer{t: t, bin: bin, port: outboxtest.ServerPort(t), dir: dir, conf: conf}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(ns.port), "-c", conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	ns.cmd = cmd
	t.Cleanup(ns.kill)
	outboxtest.AwaitLine(t, stderr, "Server is ready", 30*time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", ns.port)

	js, err := jetstream.New(connect(t, "nats://admin:admin-secret@"+addr))
	if err != nil {
		t.Fatal(err)
	}
	stream, prefix := h.names(sinktest.FaultCredentials)
	d := &natsDest{js: js, cfg: jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: 2 * time.Minute,
	}}
	if err := d.create(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The client would give up after the second refusal; a relay that is to recover
	// once the password is right again keeps trying. It tries in the background,
	// clearing its last error as it starts to: wait until one of its tries has been
	// refused (its second wait between tries has begun), as a relay's next batch would.
	var waits atomic.Int32
	nc := connect(t, "nats://relay:relay-secret@"+addr, append(relayOptions(), nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(int) time.Duration { waits.Add(1); return time.Second }))...)
	deadline := time.Now().Add(time.Minute) // generous: a busy machine must not fail it
	for waits.Load() < 2 || !errors.Is(nc.LastError(), nats.ErrAuthorization) {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not refuse the credentials: status %s, last error %v", nc.Status(), nc.LastError())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	return sinktest.Setup{Sink: s, Held: d.Held, Fix: func(context.Context) error {
		if err := writeConf("relay-secret"); err != nil {
			return err
		}
		return ns.cmd.Process.Signal(syscall.SIGHUP)
	}}
}

// natsDest is one row's stream: created, deleted and created again as the row says,
// and read back for Held.
type natsDest struct {
	js  jetstream.JetStream
	cfg jetstream.StreamConfig

	mu   sync.Mutex
	gone []string // the Nats-Msg-Ids the stream held when it was deleted
}

func (d *natsDest) nc() *nats.Conn { return d.js.Conn() }

func (d *natsDest) create(ctx context.Context) error {
	if _, err := d.js.CreateStream(ctx, d.cfg); err != nil {
		return fmt.Errorf("create stream %s: %w", d.cfg.Name, err)
	}
	return nil
}

// remove deletes the stream, remembering what it held: those events were delivered,
// and were at the destination until the stream went.
func (d *natsDest) remove(ctx context.Context) error {
	ids, err := d.Held(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone = ids
	return d.js.DeleteStream(ctx, d.cfg.Name)
}

func (d *natsDest) delete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.js.DeleteStream(ctx, d.cfg.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("delete stream %s: %v", d.cfg.Name, err)
	}
}

// Held reads the stream from its first message to its last, and returns each
// message's Nats-Msg-Id (with those of a stream deleted since).
func (d *natsDest) Held(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	ids := slices.Clone(d.gone)
	d.mu.Unlock()
	st, err := d.js.Stream(ctx, d.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ids, nil
	}
	if err != nil {
		return nil, err
	}
	state := st.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged
		}
		if err != nil {
			return nil, fmt.Errorf("read %s #%d: %w", d.cfg.Name, seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids, nil
}
