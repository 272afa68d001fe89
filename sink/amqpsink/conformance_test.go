package amqpsink_test

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against RabbitMQ:
// OUTBOX_AMQP_URL for every row but too-large, which needs a node with a small
// max_message_size of its own. Each row has queues (and exchanges) of its own, and
// the sink's connection goes through a sinktest.Proxy (and, where confirms must come
// late or garbled, a link) for the faults of the wire.
func TestConformance(t *testing.T) {
	t.Parallel()
	raw := amqpURL(t)
	u, err := neturl.Parse(raw)
	if err != nil {
		t.Fatalf("OUTBOX_AMQP_URL: %v", err)
	}
	admin, err := amqp.Dial(raw)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	h := &amqpHarness{url: u, admin: admin, run: strings.ReplaceAll(uuid.NewString()[:13], "-", "")}
	sinktest.Run(t, sinktest.Harness{Name: "amqp", Setup: h.setup}, h.want(),
		sinktest.Parallel(), sinktest.HandlerTimeout(conformanceTimeout))
}

// conformanceTimeout is the handler timeout of the suite's deliveries: above
// sinktest's default, because RabbitMQ answers a login it refuses only after 3s (the
// client does not ask for authentication_failure_close, so the broker closes the
// socket after its silent-close delay), and the dial does not end with the handler's
// context. Under 3s, the credentials row would see a sink that overran its deadline.
const conformanceTimeout = 5 * time.Second

// want is what the sink does in each row; see the package documentation.
func (h *amqpHarness) want() map[sinktest.Fault]sinktest.Verdict {
	return map[sinktest.Fault]sinktest.Verdict{
		sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// On an open connection: the confirms do not come within the handler timeout. A
		// sink that has to connect while blackholed is held instead (its dial or
		// handshake times out).
		sinktest.FaultBlackholed: {Class: sinktest.Retry},
		// The confirms are lost with the connection; the events go again (at least once).
		sinktest.FaultRestarted:       {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		sinktest.FaultCredentials:     {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
		sinktest.FaultTargetMissing:   {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.exchange(sinktest.FaultTargetMissing)},
		sinktest.FaultTargetRecreated: {Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.exchange(sinktest.FaultTargetRecreated)},
		sinktest.FaultTooLarge:        {Class: sinktest.GivenUp},
		// A queue the one message is routed to refuses it: nacked.
		sinktest.FaultOneRejected:     {Class: sinktest.Retry},
		sinktest.FaultSlowAck:         {Class: sinktest.Retry},
		sinktest.FaultCutAfterRequest: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// Garbage in place of the broker's frames: the client drops the connection.
		sinktest.FaultHostileAnswers: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	}
}

type amqpHarness struct {
	url   *neturl.URL
	admin *amqp.Connection // straight to the broker
	run   string           // names this run's queues, exchanges and users
}

// name names row f's queue and routing keys (and its exchange in the target rows).
func (h *amqpHarness) name(f sinktest.Fault) string { return "outboxconf." + h.run + "." + string(f) }

// exchange is the exchange of the target rows.
func (h *amqpHarness) exchange(f sinktest.Fault) string { return h.name(f) + ".x" }

// oddEntity is the EntityID of the event Case.Odd names: the suite's events carry
// "entity-<index>" and the odd one is the second of the batch. The broker routes by
// routing key only, so the row about one event routes by entity.
const oddEntity = "entity-1"

func (h *amqpHarness) setup(t *testing.T, c sinktest.Case) sinktest.Setup {
	name := h.name(c.Fault)
	admin, brokerURL := h.admin, *h.url
	switch c.Fault {
	case sinktest.FaultTooLarge:
		bin := os.Getenv("OUTBOX_RABBITMQ_SERVER")
		if bin == "" {
			bin = "/usr/lib/rabbitmq/bin/rabbitmq-server"
		}
		if _, err := os.Stat(bin); err != nil {
			return sinktest.Setup{NotApplicable: fmt.Sprintf("needs a RabbitMQ node of its own with a small max_message_size, and there is no rabbitmq-server at %s (set OUTBOX_RABBITMQ_SERVER); TestTooLargeIsPermanentOthersDelivered checks the same", bin)}
		}
		raw := rabbitMQ(t, "max_message_size = 65536")
		u, err := neturl.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		brokerURL = *u
		if admin, err = amqp.Dial(raw); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Close() })
	case sinktest.FaultCredentials:
		if _, err := exec.LookPath("rabbitmqctl"); err != nil {
			return sinktest.Setup{NotApplicable: "needs rabbitmqctl to give a user of its own a password the sink does not have, and there is none: " + err.Error()}
		}
	}
	d := &amqpDest{admin: admin, queue: name}
	if err := d.do(func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, false, false, false, false, nil)
		return err
	}); err != nil {
		t.Fatalf("declare queue %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := d.do(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(name, false, false, false); return err }); err != nil {
			t.Errorf("delete queue %s: %v", name, err)
		}
	})
	cfg := amqpsink.Config{RoutingKey: name + ".{type}"}
	switch c.Fault {
	case sinktest.FaultTargetMissing, sinktest.FaultTargetRecreated:
		cfg.Exchange = h.exchange(c.Fault)
		t.Cleanup(func() {
			_ = d.do(func(ch *amqp.Channel) error { return ch.ExchangeDelete(cfg.Exchange, false, false) })
		})
	case sinktest.FaultOneRejected:
		cfg.RoutingKey = name + ".{entity_id}"
	}
	if c.Fault != sinktest.FaultTargetMissing {
		if err := d.bind(cfg.Exchange, name+".#")(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	var (
		proxy *sinktest.Proxy
		slow  *link
	)
	switch c.Fault {
	case sinktest.FaultCredentials:
		user, password := "outboxconf-"+h.run, "sink-secret"
		rabbitmqctl(t, "add_user", user, "rotated")
		t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
		vhost := strings.TrimPrefix(brokerURL.Path, "/")
		if vhost == "" {
			vhost = "/"
		}
		rabbitmqctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
		brokerURL.User = neturl.UserPassword(user, password)
	case sinktest.FaultTooLarge:
	default:
		upstream := brokerURL.Host
		switch c.Fault {
		case sinktest.FaultRestarted, sinktest.FaultSlowAck, sinktest.FaultCutAfterRequest, sinktest.FaultHostileAnswers:
			slow = startLink(t, upstream)
			upstream = slow.Addr()
		}
		proxy = sinktest.StartProxy(t, upstream)
		brokerURL.Host = proxy.Addr()
	}
	cfg.URL = brokerURL.String()
	s := newSink(t, cfg)
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
		// The sink is connected (a relay that has been running), and the confirms come
		// 200ms late, so that the restart (once the queue holds one event of the batch)
		// catches them on the way. The restart drops them, and the connection that
		// follows is not slow.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := s.Handle(ctx, outbox.Event{ID: uuid.NewString(), Type: sinktest.EventType}); err != nil {
			t.Fatalf("connect: %v", err)
		}
		slow.SetDelay(200 * time.Millisecond)
		setup.Inject = func(context.Context) error {
			slow.SetDelay(0)
			return proxy.Set(sinktest.ModeRestart)
		}
	case sinktest.FaultCredentials:
		user, password := brokerURL.User.Username(), "sink-secret"
		setup.Fix = func(context.Context) error {
			rabbitmqctl(t, "change_password", user, password)
			return nil
		}
	case sinktest.FaultTargetMissing:
		setup.Fix = d.bind(cfg.Exchange, name+".#")
	case sinktest.FaultTargetRecreated:
		setup.Inject = func(context.Context) error {
			return d.do(func(ch *amqp.Channel) error { return ch.ExchangeDelete(cfg.Exchange, false, false) })
		}
		setup.Fix = d.bind(cfg.Exchange, name+".#")
	case sinktest.FaultTooLarge:
		setup.MaxMessageBytes = 65536
	case sinktest.FaultOneRejected:
		// A second queue takes the odd event's routing key and refuses every message
		// (no room, reject-publish): the broker nacks that one. Fix deletes it.
		full := name + ".full"
		if err := d.do(func(ch *amqp.Channel) error {
			if _, err := ch.QueueDeclare(full, false, false, false, false, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}); err != nil {
				return err
			}
			return ch.QueueBind(full, name+"."+oddEntity, "amq.topic", false, nil)
		}); err != nil {
			t.Fatalf("declare queue %s: %v", full, err)
		}
		deleteFull := func(context.Context) error {
			return d.do(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(full, false, false, false); return err })
		}
		t.Cleanup(func() { _ = deleteFull(context.Background()) })
		setup.Fix = deleteFull
	case sinktest.FaultSlowAck:
		// The broker takes each message at once; its confirm reaches the sink after the
		// handler timeout.
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
		setup.Inject = func(context.Context) error { slow.SetGarbage(true); return nil }
		setup.Fix = func(context.Context) error { slow.SetGarbage(false); return nil }
	}
	return setup
}

// rabbitmqctl runs rabbitmqctl against the local node, failing the test if it fails.
func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput(); err != nil {
		t.Errorf("rabbitmqctl %s: %v\n%s", args[0], err, out)
	}
}

// amqpDest is one row's queue, read back for Held. Reading takes the messages out, so
// it keeps what it has read.
type amqpDest struct {
	admin *amqp.Connection
	queue string

	mu   sync.Mutex
	read []string // the message-id of every message taken from the queue
}

// do runs f on a channel of its own: a failed operation closes its channel.
func (d *amqpDest) do(f func(ch *amqp.Channel) error) error {
	ch, err := d.admin.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return f(ch)
}

// bind declares exchange, a topic exchange ("" for amq.topic, which is there
// already), and binds the queue to it with key.
func (d *amqpDest) bind(exchange, key string) func(context.Context) error {
	return func(context.Context) error {
		return d.do(func(ch *amqp.Channel) error {
			if exchange == "" {
				return ch.QueueBind(d.queue, key, "amq.topic", false, nil)
			}
			if err := ch.ExchangeDeclare(exchange, "topic", false, false, false, false, nil); err != nil {
				return err
			}
			return ch.QueueBind(d.queue, key, exchange, false, nil)
		})
	}
}

// Held takes every message the queue holds (basic.get, which sees every message the
// broker has confirmed) and returns the message-ids of all taken so far.
func (d *amqpDest) Held(context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.do(func(ch *amqp.Channel) error {
		for {
			m, ok, err := ch.Get(d.queue, true)
			if err != nil || !ok {
				return err
			}
			d.read = append(d.read, m.MessageId)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read queue %s: %w", d.queue, err)
	}
	return append([]string(nil), d.read...), nil
}
