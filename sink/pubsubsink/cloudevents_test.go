package pubsubsink_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/pubsubsink"
)

// TestCloudEventsOnPubSub: in both CloudEvents modes, every message pstest took is
// read by the CloudEvents Go SDK (binding/spec over the attributes, as the Pub/Sub
// binding maps them: ce- and the attribute, Content-Type as datacontenttype, or
// application/cloudevents+json for the structured mode) as its event, each event
// once, with its ordering key. In the binary mode an event whose metadata is longer
// than an attribute value may be (1024 bytes) goes structured, whole.
func TestCloudEventsOnPubSub(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		format sink.EnvelopeFormat
		mode   binding.Encoding
	}{
		{sink.EnvelopeCloudEventsStructured, binding.EncodingStructured},
		{sink.EnvelopeCloudEventsBinary, binding.EncodingBinary},
	} {
		t.Run(string(tt.format), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, &reactor{})
			if err := srv.createTopic(t.Context(), "projects/"+testProject+"/topics/orders-ce"); err != nil {
				t.Fatal(err)
			}
			const source = "https://orders.example.com/outbox"
			s := newSink(t, srv.Addr, pubsubsink.Config{Project: testProject, Topic: "orders-ce", PublishTimeout: testPublishTimeout,
				Envelope: tt.format, CloudEventsSource: source})
			t.Cleanup(func() { _ = s.Close() })
			events := cetest.Events(8)
			long := events[3].ID
			events[3].Metadata["notes"] = strings.Repeat("n", 2000)
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
			for _, m := range srv.Messages() {
				h := map[string]any{}
				for k, v := range m.Attributes {
					h[k] = v
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: pubsubsink.CloudEventsPrefix, ContentType: pubsubsink.AttributeContentType, Body: m.Data})
				if err != nil {
					t.Fatalf("the SDK cannot read a message (%v): %v %s", m.Attributes, err, m.Data)
				}
				e, ok := byID[ev.ID()]
				if !ok {
					t.Fatalf("an event that was not sent: %s", ev)
				}
				want := tt.mode
				if e.ID == long {
					want = binding.EncodingStructured
				}
				if mode != want {
					t.Errorf("event %s read in mode %v, want %v", e.ID, mode, want)
				}
				seen[e.ID]++
				cetest.Check(t, ev, e, source)
				if m.OrderingKey != e.OrderingKey || m.Attributes[pubsubsink.AttributeID] != e.ID {
					t.Errorf("event %s: ordering key %q, attributes %v", e.ID, m.OrderingKey, m.Attributes)
				}
			}
			for _, e := range events {
				if seen[e.ID] != 1 {
					t.Errorf("event %s was published %d times, want once", e.ID, seen[e.ID])
				}
			}
		})
	}
}

func TestCloudEventsConfigNamesTheField(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg   pubsubsink.Config
		field string
	}{
		{pubsubsink.Config{Project: testProject, Topic: "t-1", Envelope: "binary"}, "pubsubsink.Config.Envelope"},
		{pubsubsink.Config{Project: testProject, Topic: "t-1", CloudEventsSource: "/x"}, "pubsubsink.Config.CloudEventsSource"},
	} {
		var fe *outbox.FieldError
		if err := tt.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
}
