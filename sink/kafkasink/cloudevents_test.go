package kafkasink_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// TestCloudEventsOnKafka: in both CloudEvents modes, every record in the topic (on
// kfake) is read by the CloudEvents Go SDK (binding/spec over the record headers, as
// the Kafka binding maps them: ce_ and the attribute, content-type as
// datacontenttype, or application/cloudevents+json for the structured mode) as its
// event, each event once; a binary-mode event without payload has an empty value, not
// a null one (a tombstone).
func TestCloudEventsOnKafka(t *testing.T) {
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
			const topic = "outbox-ce"
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			const source = "urn:acme:orders"
			s, err := kafkasink.New(cl, kafkasink.Config{Topic: topic, Envelope: tt.format, CloudEventsSource: source})
			if err != nil {
				t.Fatal(err)
			}
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

			cons, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cons.Close)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var recs []*kgo.Record
			for len(recs) < len(events) {
				f := cons.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("read %d of %d records: %v", len(recs), len(events), ctx.Err())
				}
				recs = append(recs, f.Records()...)
			}
			seen := map[string]int{}
			for _, r := range recs {
				h := map[string]any{}
				for _, kv := range r.Headers {
					h[kv.Key] = string(kv.Value)
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: kafkasink.CloudEventsPrefix, ContentType: kafkasink.HeaderCloudEventsContentType, Body: r.Value})
				if err != nil {
					t.Fatalf("the SDK cannot read a record (%v): %v %s", h, err, r.Value)
				}
				if mode != tt.mode {
					t.Errorf("read in mode %v, want %v", mode, tt.mode)
				}
				e, ok := byID[ev.ID()]
				if !ok {
					t.Fatalf("an event that was not sent: %s", ev)
				}
				seen[e.ID]++
				cetest.Check(t, ev, e, source)
				if h[kafkasink.HeaderID] != e.ID {
					t.Errorf("%s header %v, want %s", kafkasink.HeaderID, h[kafkasink.HeaderID], e.ID)
				}
				if _, ok := h[kafkasink.HeaderContentType]; ok {
					t.Errorf("both content-type and %s headers: %v", kafkasink.HeaderContentType, h)
				}
				if r.Value == nil {
					t.Errorf("event %s: a null value, a tombstone in a compacted topic", e.ID)
				}
			}
			for _, e := range events {
				if seen[e.ID] != 1 {
					t.Errorf("event %s is in the topic %d times, want once", e.ID, seen[e.ID])
				}
			}
		})
	}
}

func TestCloudEventsConfigNamesTheField(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg   kafkasink.Config
		field string
	}{
		{kafkasink.Config{Envelope: "binary"}, "kafkasink.Config.Envelope"},
		{kafkasink.Config{CloudEventsSource: "/x"}, "kafkasink.Config.CloudEventsSource"},
		{kafkasink.Config{Envelope: sink.EnvelopeCloudEventsBinary, CloudEventsSource: "a b"}, "kafkasink.Config.CloudEventsSource"},
	} {
		var fe *outbox.FieldError
		if err := tt.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
}
