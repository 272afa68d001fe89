package natssink_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/natssink"
)

// TestCloudEventsOnJetStream: in both CloudEvents modes, every message the stream
// holds is read by the CloudEvents Go SDK (binding/spec over the headers, as the NATS
// binding maps them: ce- headers, percent-encoded, ce-datacontenttype among them;
// Content-Type application/cloudevents+json for the structured mode) as its event,
// each event once.
func TestCloudEventsOnJetStream(t *testing.T) {
	t.Parallel()
	url := os.Getenv("OUTBOX_NATS_URL")
	if url == "" {
		t.Skip("OUTBOX_NATS_URL is not set: skipping the test against NATS JetStream (e.g. OUTBOX_NATS_URL=nats://127.0.0.1:4222)")
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
			nc, err := nats.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
			name, prefix := "OUTBOXCE_"+id, "outboxce."+id
			st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })

			const source = "/orders"
			s, err := natssink.New(nc, natssink.Config{Subject: prefix + ".{type}", Stream: name, Envelope: tt.format, CloudEventsSource: source})
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
			info, err := st.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				m, err := st.GetMsg(ctx, seq)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				h := map[string]any{}
				for k, vs := range m.Header {
					h[k] = vs[0]
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{
					Headers: h, Prefix: "ce-", ContentType: "Content-Type", DataContentTypeIsAttribute: true,
					PercentEncoded: true, Body: m.Data,
				})
				if err != nil {
					t.Fatalf("the SDK cannot read message %d (%v): %v %s", seq, m.Header, err, m.Data)
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
				if m.Header.Get(jetstream.MsgIDHeader) != e.ID || m.Subject != prefix+"."+strings.ReplaceAll(e.Type, ".", "_") {
					t.Errorf("event %s: Nats-Msg-Id %q, subject %q", e.ID, m.Header.Get(jetstream.MsgIDHeader), m.Subject)
				}
			}
			for _, e := range events {
				if seen[e.ID] != 1 {
					t.Errorf("event %s is in the stream %d times, want once", e.ID, seen[e.ID])
				}
			}
		})
	}
}

func TestCloudEventsConfigNamesTheField(t *testing.T) {
	t.Parallel()
	for cfg, field := range map[*natssink.Config]string{
		{Envelope: "binary"}:                                "natssink.Config.Envelope",
		{CloudEventsSource: "/x"}:                           "natssink.Config.CloudEventsSource",
		{Envelope: "cloudevents", CloudEventsSource: "a b"}: "natssink.Config.CloudEventsSource",
	} {
		var fe *outbox.FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%+v: %v, want an error naming %s", *cfg, err, field)
		}
	}
}
