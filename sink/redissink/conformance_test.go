package redissink_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/redissink"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against Redis:
// OUTBOX_REDIS_URL for every row but credentials, which needs a redis-server of its
// own with a password. Each row has streams of its own (keys under a prefix of this
// run), and the sink's connections go through a sinktest.Proxy, and a replyLink that
// holds back or garbles Redis's replies, for the faults of the wire. The sink's
// client is made as `outbox relay` makes it: redissink.ParseURL, with the read and
// write timeouts of --sink-timeout, here below the handler timeout as they must be.
func TestConformance(t *testing.T) {
	t.Parallel()
	raw := os.Getenv("OUTBOX_REDIS_URL")
	if raw == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the conformance suite against Redis (e.g. OUTBOX_REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	opts, err := redissink.ParseURL(raw)
	if err != nil {
		t.Fatalf("OUTBOX_REDIS_URL: %v", err)
	}
	admin := redis.NewClient(opts)
	t.Cleanup(func() { _ = admin.Close() })
	h := &redisHarness{opts: opts, admin: admin, run: strings.ReplaceAll(uuid.NewString()[:13], "-", "")}
	sinktest.Run(t, sinktest.Harness{Name: "redis", Dedup: true, Setup: h.setup}, redisConfWant,
		sinktest.Parallel(), sinktest.HandlerTimeout(redisConfTimeout), sinktest.BatchSize(5))
}

const (
	// redisConfTimeout is the handler timeout of the suite's deliveries. Above
	// sinktest's default: the client makes up to four tries of a pipeline whose
	// connection failed (go-redis's MaxRetries), and those must end within it.
	redisConfTimeout = 2 * time.Second
	// redisConfSinkTimeout is the client's read and write timeout (the relay's
	// --sink-timeout), and the sink's ProbeTimeout. go-redis does not end a read at
	// the context's deadline unless told to (ContextTimeoutEnabled), so this, not the
	// handler timeout, bounds each try.
	redisConfSinkTimeout = 500 * time.Millisecond
)

// redisConfWant is what the sink does in each row; see the package documentation.
var redisConfWant = map[sinktest.Fault]sinktest.Verdict{
	sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// The pipeline gets no reply; nor does the PING that follows.
	sinktest.FaultBlackholed: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// The client sends the pipeline again on a new connection, and the script
	// refuses the events Redis already added, as delivered.
	sinktest.FaultRestarted:       {Class: sinktest.Delivered},
	sinktest.FaultCredentials:     {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
	sinktest.FaultTargetRecreated: {Class: sinktest.Delivered}, // XADD creates the stream again
	// The odd event's stream key holds a string (WRONGTYPE).
	sinktest.FaultOneRejected: {Class: sinktest.GivenUp},
	// Redis answers one connection's commands in order, so the PING waits behind the
	// late replies, and goes unanswered too.
	sinktest.FaultSlowAck: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// Every connection is cut after its first write, the PING's too.
	sinktest.FaultCutAfterRequest: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// The PING gets Redis's own reply.
	sinktest.FaultHostileAnswers: {Class: sinktest.Retry},
}

type redisHarness struct {
	opts  *redis.Options
	admin *redis.Client // straight to OUTBOX_REDIS_URL
	run   string        // names this run's keys
}

func (h *redisHarness) setup(t *testing.T, c sinktest.Case) sinktest.Setup {
	prefix := "outboxconf." + h.run + "." + string(c.Fault)
	cfg := redissink.Config{Stream: prefix + ".{type}", ProbeTimeout: redisConfSinkTimeout}
	switch c.Fault {
	case sinktest.FaultTargetMissing:
		return sinktest.Setup{NotApplicable: "XADD creates a missing stream (a database index the server lacks is held: ReasonNoDatabase)"}
	case sinktest.FaultTooLarge:
		return sinktest.Setup{NotApplicable: "Redis takes values up to 512 MB (proto-max-bulk-len); a stream has no message limit of its own"}
	case sinktest.FaultCredentials:
		return h.setupCredentials(t, prefix, cfg)
	case sinktest.FaultOneRejected:
		cfg.Stream = prefix + ".{entity_id}" // the odd event alone in its stream
	}
	d := &redisDest{rdb: h.admin, prefix: prefix, streams: []string{prefix + "." + sinktest.EventType}}
	if c.Fault == sinktest.FaultOneRejected {
		d.streams = nil
		for i := range 5 { // the suite's events carry "entity-<index>"
			d.streams = append(d.streams, fmt.Sprintf("%s.entity-%d", prefix, i))
		}
	}
	t.Cleanup(d.deleteKeys)

	link := startReplyLink(t, h.opts.Addr)
	proxy := sinktest.StartProxy(t, link.Addr())
	opts := *h.opts
	opts.Addr = proxy.Addr()
	opts.ReadTimeout, opts.WriteTimeout = redisConfSinkTimeout, redisConfSinkTimeout
	s := newConfSink(t, &opts, cfg)
	setup := sinktest.Setup{Sink: s, Held: d.Held}
	set := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return proxy.Set(m) }
	}

	switch c.Fault {
	case sinktest.FaultRefused:
		setup.Inject, setup.Fix = set(sinktest.ModeRefuse), set(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		setup.Inject, setup.Fix = set(sinktest.ModeBlackhole), set(sinktest.ModePass)
	case sinktest.FaultRestarted:
		// The replies come 200ms late, so that the restart (once a stream holds one
		// event of the batch) catches them on the way. The restart drops them, and the
		// connections that follow are not slow.
		link.SetDelay(200 * time.Millisecond)
		setup.Inject = func(context.Context) error {
			link.SetDelay(0)
			return proxy.Set(sinktest.ModeRestart)
		}
	case sinktest.FaultTargetRecreated:
		setup.Inject = d.removeStream
	case sinktest.FaultOneRejected:
		// The odd event's stream key holds another type: the odd one is the second of
		// the batch.
		if err := h.admin.Set(t.Context(), prefix+".entity-1", "not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
	case sinktest.FaultSlowAck:
		// Redis runs each script at once; its reply reaches the sink after the
		// handler timeout.
		setup.Inject = func(context.Context) error { link.SetDelay(redisConfTimeout * 3 / 2); return nil }
		setup.Fix = func(context.Context) error { link.SetDelay(0); return nil }
	case sinktest.FaultCutAfterRequest:
		// The replies come 200ms late, so that they cannot slip through between the
		// request going out and the cut.
		setup.Inject = func(context.Context) error {
			link.SetDelay(200 * time.Millisecond)
			return proxy.Set(sinktest.ModeCut)
		}
		setup.Fix = func(context.Context) error {
			link.SetDelay(0)
			return proxy.Set(sinktest.ModePass)
		}
	case sinktest.FaultHostileAnswers:
		setup.Inject = func(context.Context) error { link.SetHostile(true); return nil }
		setup.Fix = func(context.Context) error {
			link.SetHostile(false)
			if link.replaced.Load() == 0 {
				return errors.New("no script was answered with garbage: the row tested nothing")
			}
			return nil
		}
	}
	return setup
}

// setupCredentials sets up the credentials row on a redis-server of the row's own,
// whose password was changed: the sink connects with the old one. Fix gives the
// server the old password back (CONFIG SET requirepass).
func (h *redisHarness) setupCredentials(t *testing.T, prefix string, cfg redissink.Config) sinktest.Setup {
	const old, rotated = "relay-secret", "rotated"
	addr, err := startConfRedis(t, "--requirepass", rotated)
	if err != nil {
		return sinktest.Setup{NotApplicable: err.Error()}
	}
	var mu sync.Mutex
	password := rotated
	admin := redis.NewClient(&redis.Options{Addr: addr, CredentialsProvider: func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		return "", password
	}})
	t.Cleanup(func() { _ = admin.Close() })
	d := &redisDest{rdb: admin, prefix: prefix, streams: []string{prefix + "." + sinktest.EventType}}
	opts, err := redissink.ParseURL("redis://:" + old + "@" + addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	opts.ReadTimeout, opts.WriteTimeout = redisConfSinkTimeout, redisConfSinkTimeout
	return sinktest.Setup{Sink: newConfSink(t, opts, cfg), Held: d.Held, Fix: func(ctx context.Context) error {
		if err := admin.ConfigSet(ctx, "requirepass", old).Err(); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		password = old
		return nil
	}}
}

func newConfSink(t *testing.T, opts *redis.Options, cfg redissink.Config) *redissink.Sink {
	t.Helper()
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := redissink.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startConfRedis starts a redis-server of the test's own, without persistence, and
// returns its address; an error when there is no binary.
func startConfRedis(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := cmp.Or(os.Getenv("OUTBOX_REDIS_SERVER"), "redis-server")
	if _, err := exec.LookPath(bin); err != nil {
		return "", fmt.Errorf("needs a redis-server of its own, with a password, and there is no binary %s (install redis-server or set OUTBOX_REDIS_SERVER)", bin)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command(bin, append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	outboxtest.AwaitLine(t, out, "Ready to accept connections", 30*time.Second)
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// redisDest is one row's streams, under prefix, read back for Held.
type redisDest struct {
	rdb     *redis.Client
	prefix  string
	streams []string

	mu   sync.Mutex
	gone []string // the event IDs of a stream deleted since
}

// removeStream deletes the row's stream, remembering what it held: those events were
// delivered, and were at the destination until the stream went.
func (d *redisDest) removeStream(ctx context.Context) error {
	ids, err := d.Held(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone = ids
	return d.rdb.Del(ctx, d.streams[0]).Err()
}

// Held returns the event ID of every entry of the row's streams (and of a stream
// deleted since), read from the first entry to the last.
func (d *redisDest) Held(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	ids := slices.Clone(d.gone)
	d.mu.Unlock()
	for _, st := range d.streams {
		msgs, err := d.rdb.XRange(ctx, st, "-", "+").Result()
		if redis.HasErrorPrefix(err, "WRONGTYPE") {
			continue // the one-rejected row's odd key
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", st, err)
		}
		for _, m := range msgs {
			id, _ := m.Values[redissink.FieldID].(string)
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// deleteKeys deletes the row's streams and dedup sets from the shared Redis.
func (d *redisDest) deleteKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pattern := range []string{d.prefix + ".*", "{" + d.prefix + ".*"} {
		iter := d.rdb.Scan(ctx, 0, pattern, 100).Iterator()
		for iter.Next(ctx) {
			d.rdb.Del(ctx, iter.Val())
		}
	}
}
