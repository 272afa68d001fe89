package pubsubsink_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/pubsubsink"
	"github.com/fitiq/outbox/sink/sinktest"
)

const testProject = "outbox-test"

// testPublishTimeout bounds a publish in the tests, so that closing a sink whose
// publish went into a blackhole does not wait the default minute.
const testPublishTimeout = 2 * time.Second

// TestConformance runs the sinks' fault matrix (package sinktest) against pstest, the
// client library's in-process Pub/Sub server: one server per row, faults of the wire
// from a sinktest.Proxy (and a holdLink for late answers), faults of the server
// (credentials, one message refused, hostile status messages) from pstest's reactors,
// which answer a Publish request as the row says.
func TestConformance(t *testing.T) {
	t.Parallel()
	sinktest.Run(t, sinktest.Harness{Name: "pubsub", Setup: setupConformance}, conformanceWant, sinktest.Parallel())
}

func conformanceTopic(f sinktest.Fault) string {
	return "projects/" + testProject + "/topics/conf-" + string(f)
}

var conformanceWant = map[sinktest.Fault]sinktest.Verdict{
	sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// No answer within the handler timeout: the message may yet be published.
	sinktest.FaultBlackholed: {Class: sinktest.Retry},
	// The request in flight fails Unavailable with the connection.
	sinktest.FaultRestarted:       {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	sinktest.FaultCredentials:     {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
	sinktest.FaultTargetMissing:   {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: conformanceTopic(sinktest.FaultTargetMissing)},
	sinktest.FaultTargetRecreated: {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: conformanceTopic(sinktest.FaultTargetRecreated)},
	// Refused by the client before it is sent (ErrOversizedMessage).
	sinktest.FaultTooLarge: {Class: sinktest.GivenUp},
	// The request holding it is refused InvalidArgument; published again alone, the
	// others go through.
	sinktest.FaultOneRejected: {Class: sinktest.GivenUp},
	sinktest.FaultSlowAck:     {Class: sinktest.Retry},
	// gRPC reports the connection lost under the request as Unavailable.
	sinktest.FaultCutAfterRequest: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	// Status messages of NUL bytes, invalid UTF-8 and a megabyte of text.
	sinktest.FaultHostileAnswers: {Class: sinktest.Retry},
}

func setupConformance(t *testing.T, c sinktest.Case) sinktest.Setup {
	var s sinktest.Setup
	t.Cleanup(func() { // registered first, so run last: after the proxy closed its connections
		if sk, ok := s.Sink.(*pubsubsink.Sink); ok {
			_ = sk.Close()
		}
	})
	rx := &reactor{odd: c.Odd}
	switch c.Fault {
	case sinktest.FaultCredentials:
		rx.refuse = status.Error(codes.Unauthenticated, "Request had invalid authentication credentials.")
	case sinktest.FaultHostileAnswers:
		rx.hostile = true
	}
	srv := newServer(t, rx)
	topic := conformanceTopic(c.Fault)
	if c.Fault != sinktest.FaultTargetMissing {
		if err := srv.createTopic(t.Context(), topic); err != nil {
			t.Fatal(err)
		}
	}
	upstream := srv.Addr
	var link *holdLink
	switch c.Fault {
	case sinktest.FaultSlowAck:
		link = startHoldLink(t, upstream)
		upstream = link.Addr()
	case sinktest.FaultRestarted:
		// The answer to the batch (the second request, after the warm-up's) is held
		// from the moment the server gets it, so that the restart comes while the sink
		// waits for it, whatever the timing.
		link = startHoldLink(t, upstream)
		upstream = link.Addr()
		_ = rx.update(func(r *reactor) { r.arm, r.armAt = func() { link.Hold(true) }, 2 })(nil)
	}
	proxy := sinktest.StartProxy(t, upstream)
	sink := newSink(t, proxy.Addr(), pubsubsink.Config{Topic: topic, PublishTimeout: testPublishTimeout})
	s.Sink, s.Held = sink, srv.Held
	set := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return proxy.Set(m) }
	}
	switch c.Fault {
	case sinktest.FaultRefused:
		s.Inject, s.Fix = set(sinktest.ModeRefuse), set(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		s.Inject, s.Fix = set(sinktest.ModeBlackhole), set(sinktest.ModePass)
	case sinktest.FaultRestarted:
		s.Inject = func(context.Context) error {
			err := proxy.Set(sinktest.ModeRestart)
			link.Hold(false)
			return err
		}
	case sinktest.FaultCutAfterRequest:
		s.Inject, s.Fix = set(sinktest.ModeCut), set(sinktest.ModePass)
	case sinktest.FaultCredentials:
		s.Fix = rx.update(func(r *reactor) { r.refuse = nil })
	case sinktest.FaultTargetMissing:
		s.Fix = func(ctx context.Context) error { return srv.createTopic(ctx, topic) }
	case sinktest.FaultTargetRecreated:
		s.Inject = func(ctx context.Context) error { return srv.deleteTopic(ctx, topic) }
		s.Fix = func(ctx context.Context) error { return srv.createTopic(ctx, topic) }
	case sinktest.FaultTooLarge:
		s.MaxMessageBytes = pubsub.MaxPublishRequestBytes
	case sinktest.FaultOneRejected:
		s.Fix = rx.update(func(r *reactor) { r.odd = "" })
	case sinktest.FaultSlowAck:
		// After the warm-up, so that the connection is up: gRPC waits for the
		// server's first frames before it sends anything.
		s.Inject = func(context.Context) error { link.Hold(true); return nil }
		s.Fix = func(context.Context) error { link.Hold(false); return nil }
	case sinktest.FaultHostileAnswers:
		s.Fix = rx.update(func(r *reactor) { r.hostile = false })
	}
	return s
}

// server is a pstest server with an admin client of its own, straight to it.
type server struct {
	*pstest.Server
	admin *pubsub.Client
}

func newServer(t *testing.T, rx *reactor) *server {
	t.Helper()
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "Publish", Reactor: rx})
	t.Cleanup(func() { _ = srv.Close() })
	return &server{Server: srv, admin: newClient(t, srv.Addr)}
}

func (s *server) createTopic(ctx context.Context, name string) error {
	_, err := s.admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name})
	return err
}

func (s *server) deleteTopic(ctx context.Context, name string) error {
	return s.admin.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: name})
}

// Held is a sinktest.Setup.Held: the outbox-id of every message the server took.
func (s *server) Held(context.Context) ([]string, error) {
	var ids []string
	for _, m := range s.Messages() {
		ids = append(ids, m.Attributes[pubsubsink.AttributeID])
	}
	return ids, nil
}

// newClient returns a client talking to addr without credentials, closed when t ends.
func newClient(t *testing.T, addr string) *pubsub.Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := pubsub.NewClient(context.WithoutCancel(t.Context()), testProject, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = conn.Close() })
	return client
}

func newSink(t *testing.T, addr string, cfg pubsubsink.Config) *pubsubsink.Sink {
	t.Helper()
	s, err := pubsubsink.New(newClient(t, addr), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reactor answers the server's Publish requests as a row says: refused with an
// error, refused when a message is the odd one, or with hostile status messages.
type reactor struct {
	mu      sync.Mutex
	refuse  error  // every request
	odd     string // a request holding this event ID: InvalidArgument
	hostile bool
	answers int
	fail    map[string]int // ordering key → requests to refuse with Internal, for the tests of paused keys
	// arm, when set, is called as the armAt-th request comes in, before it is answered.
	arm      func()
	armAt    int
	requests int
}

func (r *reactor) update(f func(*reactor)) func(context.Context) error {
	return func(context.Context) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		f(r)
		return nil
	}
}

func (r *reactor) React(req any) (bool, any, error) {
	pr, ok := req.(*pubsubpb.PublishRequest)
	if !ok {
		return false, nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if r.arm != nil && r.requests == r.armAt {
		r.arm()
	}
	refuse := func(err error) (bool, any, error) { return true, &pubsubpb.PublishResponse{}, err }
	if r.refuse != nil {
		return refuse(r.refuse)
	}
	for _, m := range pr.Messages {
		if r.odd != "" && m.Attributes[pubsubsink.AttributeID] == r.odd {
			return refuse(status.Error(codes.InvalidArgument, "One or more messages in the publish request is invalid: attribute value not accepted"))
		}
		if r.fail[m.OrderingKey] > 0 {
			r.fail[m.OrderingKey]--
			return refuse(status.Error(codes.Internal, "internal error"))
		}
	}
	if r.hostile {
		n := r.answers
		r.answers++
		return refuse(hostileStatus[n%len(hostileStatus)])
	}
	return false, nil, nil
}

// hostileStatus are status errors no Pub/Sub server gives: NUL bytes, invalid UTF-8,
// control characters, a megabyte of text.
var hostileStatus = []error{
	status.Error(codes.Internal, "bad\x00gateway\x00"),
	status.Error(codes.Unknown, "\xff\xfe\xc3\x28 service \x80 unavailable\x1b[31m"),
	status.Error(codes.Internal, hostileText(1<<20)),
	status.Error(codes.Aborted, "<script>alert(1)</script>\r\n\x00"),
}

// hostileText is n bytes of NUL, invalid UTF-8, control characters and markup.
func hostileText(n int) string {
	const unit = "\x00\xff\xfe\x1b[31m<script>alert(1)</script>\xc3\x28"
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

// holdLink is a TCP relay whose answers from the server can be held back: with hold
// on, the server gets every request and keeps what it publishes, and the client hears
// nothing until hold is off. It stands for a destination that acknowledges late.
type holdLink struct {
	upstream string
	ln       net.Listener
	mu       sync.Mutex
	release  chan struct{} // closed when not holding
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func startHoldLink(t *testing.T, upstream string) *holdLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &holdLink{upstream: upstream, ln: ln, release: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(l.release)
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *holdLink) Addr() string { return l.ln.Addr().String() }

// Hold holds the server's answers back (on) or lets them, and those held, through.
func (l *holdLink) Hold(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.release:
		if on {
			l.release = make(chan struct{})
		}
	default:
		if !on {
			close(l.release)
		}
	}
}

func (l *holdLink) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.release
}

func (l *holdLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		l.mu.Lock()
		l.conns[c], l.conns[up] = true, true
		l.mu.Unlock()
		l.wg.Add(2)
		go func() { // requests go straight through
			defer l.wg.Done()
			_, _ = io.Copy(up, c)
			_ = up.Close()
			_ = c.Close()
		}()
		go func() { // answers wait at the gate
			defer l.wg.Done()
			defer func() { _ = c.Close(); _ = up.Close() }()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					<-l.gate()
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (l *holdLink) close() {
	_ = l.ln.Close()
	l.Hold(false)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
