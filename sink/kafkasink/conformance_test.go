package kafkasink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/kafkasink"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against Kafka: a
// kfake cluster of one broker per row, in the test process, with topics named for
// this run. The broker advertises a sinktest.Proxy's address (kfake.ListenFn), so
// that the sink reaches it, bootstrap and metadata alike, only through the proxy,
// which puts the faults on the wire; a produceLink behind the proxy holds back or
// garbles the broker's answers to produce requests. The sink's client is made as
// `outbox relay` makes it: kafkasink.ParseURL and franz-go's defaults.
func TestConformance(t *testing.T) {
	t.Parallel()
	h := &kafkaHarness{run: strings.ReplaceAll(uuid.NewString()[:13], "-", "")}
	sinktest.Run(t, sinktest.Harness{Name: "kafka", Setup: h.setup}, h.want(),
		sinktest.Parallel(), sinktest.HandlerTimeout(kafkaConfTimeout))
}

const (
	// kafkaConfTimeout is the handler timeout of the suite's deliveries. Above
	// sinktest's default: after a restart, franz-go sends the records again once its
	// retry backoff (250ms and up, jittered) has passed, and that must come within
	// the handler's time even on a loaded machine.
	kafkaConfTimeout = 2 * time.Second
	// kafkaConfProbe is the sink's ProbeTimeout: the metadata request it sends after
	// a produce went unanswered runs past the handler's deadline, and must end
	// within the suite's grace for a sink that overruns it (2s, which the default
	// ProbeTimeout would reach).
	kafkaConfProbe = 500 * time.Millisecond
	// kafkaConfMaxBytes is the too-large row's topic limit (max.message.bytes), and
	// the client's batch limit: a producer configured for its topic.
	kafkaConfMaxBytes = 64 << 10
)

// want is what the sink does in each row; see the package documentation.
func (h *kafkaHarness) want() map[sinktest.Fault]sinktest.Verdict {
	return map[sinktest.Fault]sinktest.Verdict{
		sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// The produce goes unanswered until the deadline; the probe that follows is
		// not answered either.
		sinktest.FaultBlackholed: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// The acknowledgements are lost with the connections; the client sends the
		// records again on new ones, and the broker, which wrote them, answers
		// without writing them twice (idempotent producer).
		sinktest.FaultRestarted:     {Class: sinktest.Delivered},
		sinktest.FaultCredentials:   {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
		sinktest.FaultTargetMissing: {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.topic(sinktest.FaultTargetMissing)},
		sinktest.FaultTargetRecreated: {
			Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.topic(sinktest.FaultTargetRecreated)},
		sinktest.FaultTooLarge:    {Class: sinktest.GivenUp},
		sinktest.FaultOneRejected: {Class: sinktest.GivenUp},
		// The broker has written the records and answers late, while it answers the
		// probe at once: retried, and the next delivery takes the late answer.
		sinktest.FaultSlowAck: {Class: sinktest.Retry},
		// Every connection is cut after its first request, the probe's too.
		sinktest.FaultCutAfterRequest: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// Garbage where the produce answer belongs: franz-go drops the connection and
		// sends again; the probe is answered.
		sinktest.FaultHostileAnswers: {Class: sinktest.Retry},
	}
}

type kafkaHarness struct {
	run string // names this run's topics
}

// topic is row f's topic.
func (h *kafkaHarness) topic(f sinktest.Fault) string {
	return "outboxconf." + h.run + "." + string(f)
}

// Credentials of the credentials row: the sink logs in as relay over SCRAM, the
// harness reads the topic as reader over PLAIN.
const (
	confRelayUser, confRelayPassword   = "relay", "s3cret"
	confReaderUser, confReaderPassword = "reader", "reader-secret"
)

func (h *kafkaHarness) setup(t *testing.T, c sinktest.Case) sinktest.Setup {
	topic := h.topic(c.Fault)
	var opts []kfake.Opt
	if c.Fault == sinktest.FaultCredentials {
		opts = append(opts, kfake.EnableSASL(),
			kfake.Superuser("SCRAM-SHA-256", confRelayUser, confRelayPassword),
			kfake.Superuser("PLAIN", confReaderUser, confReaderPassword))
	}
	k := startKafka(t, opts...)
	d := &kafkaDest{k: k, topics: []string{topic}}
	if c.Fault == sinktest.FaultCredentials {
		d.auth = []kgo.Opt{kgo.SASL(plain.Auth{User: confReaderUser, Pass: confReaderPassword}.AsMechanism())}
	}

	sinkURL := "kafka://" + k.proxy.Addr()
	cfg := kafkasink.Config{Topic: topic, ProbeTimeout: kafkaConfProbe}
	var clientOpts []kgo.Opt
	switch c.Fault {
	case sinktest.FaultTargetMissing:
		// Not created.
	case sinktest.FaultTooLarge:
		d.create(t, topic, map[string]string{"max.message.bytes": fmt.Sprint(kafkaConfMaxBytes)})
		clientOpts = append(clientOpts, kgo.ProducerBatchMaxBytes(kafkaConfMaxBytes))
	case sinktest.FaultOneRejected:
		// A topic per entity, so that the odd event is alone in its request's
		// partition: the broker refuses a partition's records together.
		cfg.Topic = topic + ".{entity_id}"
		d.topics = nil
		for i := range 8 {
			d.topics = append(d.topics, fmt.Sprintf("%s.entity-%d", topic, i))
			d.create(t, d.topics[i], nil)
		}
	case sinktest.FaultCredentials:
		d.create(t, topic, nil)
		sinkURL = "kafka://" + confRelayUser + ":" + confRelayPassword + "@" + k.proxy.Addr() + "/?sasl=scram-sha-256"
	default:
		d.create(t, topic, nil)
	}
	s := newConfSink(t, sinkURL, cfg, clientOpts...)
	setup := sinktest.Setup{Sink: s, Held: d.Held}
	set := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return k.proxy.Set(m) }
	}

	switch c.Fault {
	case sinktest.FaultRefused:
		setup.Inject, setup.Fix = set(sinktest.ModeRefuse), set(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		setup.Inject, setup.Fix = set(sinktest.ModeBlackhole), set(sinktest.ModePass)
	case sinktest.FaultRestarted:
		// The produce answers come 200ms late, so that the restart (once the topic
		// holds one event of the batch) catches them on the way. The restart drops
		// them, and the connections that follow are not slow.
		k.link.SetDelay(200 * time.Millisecond)
		setup.Inject = func(context.Context) error {
			k.link.SetDelay(0)
			return k.proxy.Set(sinktest.ModeRestart)
		}
	case sinktest.FaultCredentials:
		// kfake drops the connection on a wrong password; a Kafka broker answers
		// SASL_AUTHENTICATION_FAILED. The control answers so for relay's logins
		// until Fix (the broker accepts relay's password again), as a broker whose
		// password for relay was rotated would.
		var rejecting atomic.Bool
		rejecting.Store(true)
		k.c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
			k.c.KeepControl()
			auth := req.(*kmsg.SASLAuthenticateRequest).SASLAuthBytes
			if !rejecting.Load() || !bytes.Contains(auth, []byte("n="+confRelayUser+",")) {
				return nil, nil, false
			}
			resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			msg := "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
			resp.ErrorMessage = &msg
			return resp, nil, true
		})
		setup.Fix = func(context.Context) error { rejecting.Store(false); return nil }
	case sinktest.FaultTargetMissing:
		setup.Fix = func(context.Context) error { return k.c.CreateTopic(topic, 1, nil) }
	case sinktest.FaultTargetRecreated:
		setup.Inject = d.remove
		setup.Fix = func(context.Context) error { return k.c.CreateTopic(topic, 1, nil) }
	case sinktest.FaultTooLarge:
		setup.MaxMessageBytes = kafkaConfMaxBytes
	case sinktest.FaultOneRejected:
		// The broker refuses the odd event's record as invalid (as it refuses, say,
		// a record without a key on a compacted topic); the others are written.
		odd := topic + ".entity-1"
		k.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: odd, Err: kerr.InvalidRecord, Count: -1})
	case sinktest.FaultSlowAck:
		// The broker writes each record at once; its answer reaches the sink after
		// the handler timeout.
		setup.Inject = func(context.Context) error { k.link.SetDelay(kafkaConfTimeout * 3 / 2); return nil }
		setup.Fix = func(context.Context) error { k.link.SetDelay(0); return nil }
	case sinktest.FaultCutAfterRequest:
		// The answer comes 200ms late, so that it cannot slip through between the
		// request going out and the cut.
		setup.Inject = func(context.Context) error {
			k.link.SetDelay(200 * time.Millisecond)
			return k.proxy.Set(sinktest.ModeCut)
		}
		setup.Fix = func(context.Context) error {
			k.link.SetDelay(0)
			return k.proxy.Set(sinktest.ModePass)
		}
	case sinktest.FaultHostileAnswers:
		setup.Inject = func(context.Context) error { k.link.SetHostile(true); return nil }
		setup.Fix = func(context.Context) error {
			k.link.SetHostile(false)
			if k.link.answers.Load() == 0 {
				return errors.New("no produce request was answered with garbage: the row tested nothing")
			}
			return nil
		}
	}
	return setup
}

// confKafka is one row's broker: kfake, listening on addr, advertising the proxy's
// address; the proxy relays to the link, the link to kfake.
type confKafka struct {
	c     *kfake.Cluster
	addr  string // where kfake listens
	proxy *sinktest.Proxy
	link  *produceLink
}

// startKafka starts a cluster of one broker behind a proxy and a link, all closed
// when the test ends.
func startKafka(t *testing.T, opts ...kfake.Opt) *confKafka {
	t.Helper()
	k := &confKafka{}
	listen := func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		k.addr = ln.Addr().String()
		k.link = startProduceLink(t, k.addr)
		k.proxy = sinktest.StartProxy(t, k.link.Addr())
		advertised, err := net.ResolveTCPAddr("tcp", k.proxy.Addr())
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		return advertisedListener{Listener: ln, addr: advertised}, nil
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(listen)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // before the proxy and the link, registered earlier
	k.c = c
	return k
}

// advertisedListener is kfake's listener, reporting the proxy's address: kfake
// advertises its listener's address to clients.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }

// newConfSink returns a sink whose client is made as `outbox relay` makes it, with
// extra options.
func newConfSink(t *testing.T, sinkURL string, cfg kafkasink.Config, extra ...kgo.Opt) *kafkasink.Sink {
	t.Helper()
	opts, err := kafkasink.ParseURL(sinkURL)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	s, err := kafkasink.New(cl, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kafkaDest is one row's topics, read back for Held straight from kfake, past the
// proxy and the link.
type kafkaDest struct {
	k      *confKafka
	topics []string
	auth   []kgo.Opt

	mu    sync.Mutex
	gone  []string            // the event IDs a deleted topic held
	cache map[string]topicIDs // by topic: what was read at the topic's last end offsets
}

type topicIDs struct {
	key string // the topic's ID and end offsets
	ids []string
}

func (d *kafkaDest) create(t *testing.T, topic string, configs map[string]string) {
	t.Helper()
	if err := d.k.c.CreateTopic(topic, 1, configs); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// remove deletes the row's topic, remembering what it held: those events were
// delivered, and were at the destination until the topic went.
func (d *kafkaDest) remove(ctx context.Context) error {
	ids, err := d.Held(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone = ids
	return d.k.c.DeleteTopic(d.topics[0])
}

// Held returns the Outbox-Id header of every record of the row's topics (and of a
// topic deleted since). A topic is read again only when its end offsets moved:
// Held is polled while a batch is delivered.
func (d *kafkaDest) Held(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := slices.Clone(d.gone)
	for _, topic := range d.topics {
		info := d.k.c.TopicInfo(topic)
		if info == nil {
			continue // not created yet, or deleted
		}
		ends := map[int32]int64{}
		key := fmt.Sprintf("%x", info.TopicID)
		for _, p := range d.k.c.PartitionInfos(topic) {
			ends[p.Partition] = p.HighWatermark
			key += fmt.Sprintf(" %d:%d", p.Partition, p.HighWatermark)
		}
		if got, ok := d.cache[topic]; ok && got.key == key {
			ids = append(ids, got.ids...)
			continue
		}
		read, err := d.read(ctx, topic, ends)
		if err != nil {
			return nil, err
		}
		if d.cache == nil {
			d.cache = map[string]topicIDs{}
		}
		d.cache[topic] = topicIDs{key: key, ids: read}
		ids = append(ids, read...)
	}
	return ids, nil
}

// read consumes topic from its start to ends, with a client that dials kfake itself
// whatever address it advertises.
func (d *kafkaDest) read(ctx context.Context, topic string, ends map[int32]int64) ([]string, error) {
	parts := map[int32]kgo.Offset{}
	left := 0
	for p, end := range ends {
		if end > 0 {
			parts[p] = kgo.NewOffset().AtStart()
			left++
		}
	}
	if left == 0 {
		return nil, nil
	}
	direct := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, network, d.k.addr)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(d.k.addr), kgo.Dialer(direct),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})}, d.auth...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var ids []string
	for left > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", topic, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset >= ends[r.Partition] {
				return // written since the end offsets were taken
			}
			for _, h := range r.Headers {
				if h.Key == kafkasink.HeaderID {
					ids = append(ids, string(h.Value))
				}
			}
			if r.Offset == ends[r.Partition]-1 {
				left--
			}
		})
	}
	return ids, nil
}
