package amqpsink_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/amqpsink"
)

// TestCloudEventsOnRabbitMQ: in both CloudEvents modes, every message the queue gets
// is read by the CloudEvents Go SDK (binding/spec over the headers, as the AMQP
// binding maps application properties: cloudEvents_ and the attribute, Integer and
// Boolean as native values; content-type as datacontenttype, or
// application/cloudevents+json for the structured mode) as its event, each event
// once.
func TestCloudEventsOnRabbitMQ(t *testing.T) {
	t.Parallel()
	url := os.Getenv("OUTBOX_AMQP_URL")
	if url == "" {
		t.Skip("OUTBOX_AMQP_URL is not set: skipping the test against RabbitMQ (e.g. OUTBOX_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/)")
	}
	for _, tt := range []struct {
		format sink.EnvelopeFormat
		mode   binding.Encoding
	}{
		{sink.EnvelopeCloudEventsStructured, binding.EncodingStructured},
		{sink.EnvelopeCloudEventsBinary, binding.EncodingBinary},
	} {
		t.Run(string(tt.format), func(t *testing.T) {
			t.Parallel()
			conn, err := amqp.Dial(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			prefix := "outboxce." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
			q, err := ch.QueueDeclare(prefix, false, true, true, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.QueueBind(q.Name, prefix+".#", "amq.topic", false, nil); err != nil {
				t.Fatal(err)
			}

			s, err := amqpsink.New(amqpsink.Config{URL: url, RoutingKey: prefix + ".{type}", Envelope: tt.format})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			events := cetest.Events(8)
			byID := map[string]outbox.Event{}
			for _, e := range events {
				byID[e.ID] = e
			}
			for i, err := range s.HandleBatch(t.Context(), events) {
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			seen := map[string]int{}
			for {
				d, ok, err := ch.Get(q.Name, true)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				h := map[string]any{"content-type": d.ContentType}
				for k, v := range d.Headers {
					h[k] = v
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: amqpsink.CloudEventsPrefix, ContentType: "content-type", Body: d.Body})
				if err != nil {
					t.Fatalf("the SDK cannot read a message (%s, %v): %v %s", d.ContentType, d.Headers, err, d.Body)
				}
				if mode != tt.mode {
					t.Errorf("read in mode %v, want %v", mode, tt.mode)
				}
				e, ok := byID[ev.ID()]
				if !ok {
					t.Fatalf("an event that was not sent: %s", ev)
				}
				seen[e.ID]++
				cetest.Check(t, ev, e, "")
				if d.MessageId != e.ID {
					t.Errorf("message-id %q, want %q", d.MessageId, e.ID)
				}
				if tt.mode == binding.EncodingBinary {
					if v, ok := d.Headers["cloudEvents_outboxattempt"].(int64); !ok || v != int64(e.Attempts) {
						t.Errorf("cloudEvents_outboxattempt = %#v, want the AMQP long %d", d.Headers["cloudEvents_outboxattempt"], e.Attempts)
					}
				}
			}
			for _, e := range events {
				if seen[e.ID] != 1 {
					t.Errorf("event %s arrived %d times, want once", e.ID, seen[e.ID])
				}
			}
		})
	}
}

func TestCloudEventsConfigNamesTheField(t *testing.T) {
	t.Parallel()
	const u = "amqp://guest:guest@127.0.0.1:5672/"
	for _, tt := range []struct {
		cfg   amqpsink.Config
		field string
	}{
		{amqpsink.Config{URL: u, Envelope: "binary"}, "amqpsink.Config.Envelope"},
		{amqpsink.Config{URL: u, CloudEventsSource: "/x"}, "amqpsink.Config.CloudEventsSource"},
	} {
		var fe *outbox.FieldError
		if err := tt.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
}
