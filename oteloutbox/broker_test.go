package oteloutbox_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sink/natssink"
)

// headerCarrier reads message headers whose keys are the W3C names as the sinks write
// them (lower case), as a consumer of a NATS or AMQP message does.
type headerCarrier func(key string) string

func (c headerCarrier) Get(key string) string { return c(key) }
func (headerCarrier) Set(string, string)      {}
func (headerCarrier) Keys() []string          { return nil }

var _ propagation.TextMapCarrier = headerCarrier(nil)

// relayThrough enqueues one event under a use case's span, delivers it through sink,
// and returns the event and the use case's span context.
func relayThrough(t *testing.T, r *recording, h outbox.Handler) (*outbox.Event, trace.SpanContext) {
	t.Helper()
	s := r.store(t)
	e := outbox.NewEvent("entry.saved", "entry-1", "user-1")
	parent := useCase(t, r.tp, s, e)
	p := newProcessor(t, r, s, h, outbox.Config{Clock: outboxtest.NewClock(time.Now())})
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(context.Background(), e.ID); got.Status != outbox.StatusCompleted {
		t.Fatalf("event is %s, want completed", got.Status)
	}
	return e, parent
}

// consumed continues the trace from a message's headers, as the receiving service
// would, and checks the consumer's span is the attempt span's child in the use case's trace.
func consumed(t *testing.T, r *recording, parent trace.SpanContext, headers headerCarrier) {
	t.Helper()
	ctx := w3c.Extract(context.Background(), headers)
	_, span := r.tp.Tracer("consumer").Start(ctx, "consume", trace.WithSpanKind(trace.SpanKindConsumer))
	span.End()
	attempt := r.one(t, "deliver entry.saved")
	got := r.one(t, "consume")
	if got.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("consumer span is in trace %s, want the use case's %s", got.SpanContext().TraceID(), parent.TraceID())
	}
	if got.Parent().SpanID() != attempt.SpanContext().SpanID() {
		t.Errorf("consumer span's parent = %s, want the delivery attempt %s", got.Parent().SpanID(), attempt.SpanContext().SpanID())
	}
	if !got.Parent().IsRemote() {
		t.Error("consumer span's parent is not remote: the context did not come from the message")
	}
}

func TestTraceContinuesThroughNATS(t *testing.T) {
	url := os.Getenv("OUTBOX_NATS_URL")
	if url == "" {
		t.Skip("OUTBOX_NATS_URL is not set: skipping the test against NATS JetStream (e.g. OUTBOX_NATS_URL=nats://127.0.0.1:4222)")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	name, prefix := "OUTBOXOTEL_"+id, "outboxotel."+id
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })

	r := newRecording(t, oteloutbox.Config{})
	sink, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: name})
	if err != nil {
		t.Fatal(err)
	}
	e, parent := relayThrough(t, r, sink)

	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Headers().Get(jetstream.MsgIDHeader); got != e.ID {
		t.Fatalf("message %q on %s, want event %s", got, msg.Subject(), e.ID)
	}
	consumed(t, r, parent, func(k string) string { return msg.Headers().Get(k) })
}

func TestTraceContinuesThroughRabbitMQ(t *testing.T) {
	url := os.Getenv("OUTBOX_AMQP_URL")
	if url == "" {
		t.Skip("OUTBOX_AMQP_URL is not set: skipping the test against RabbitMQ (e.g. OUTBOX_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/)")
	}
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
	queue := "outboxotel." + id
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })
	if err := ch.QueueBind(queue, queue+".#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}

	r := newRecording(t, oteloutbox.Config{})
	sink, err := amqpsink.New(amqpsink.Config{URL: url, Exchange: "amq.topic", RoutingKey: queue + ".{type}", Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	e, parent := relayThrough(t, r, sink)

	d, ok, err := ch.Get(queue, true)
	if err != nil || !ok {
		t.Fatalf("get from %s: ok=%v err=%v", queue, ok, err)
	}
	if d.MessageId != e.ID {
		t.Fatalf("message %q, want event %s", d.MessageId, e.ID)
	}
	consumed(t, r, parent, func(k string) string {
		v, _ := d.Headers[k].(string)
		return v
	})
}
