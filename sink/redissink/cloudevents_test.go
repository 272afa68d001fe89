package redissink_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/redissink"
)

// TestCloudEventsOnRedisStreams: in both CloudEvents modes, every entry of the stream
// is read by the CloudEvents Go SDK (binding/spec over the entry's fields: ce_ and the
// attribute, content-type, the data field; the envelope field in the structured mode)
// as its event, each event once, and the id and type fields stay.
func TestCloudEventsOnRedisStreams(t *testing.T) {
	t.Parallel()
	u := os.Getenv("OUTBOX_REDIS_URL")
	if u == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the test against Redis (e.g. OUTBOX_REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
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
			rdb := redis.NewClient(opts)
			t.Cleanup(func() { _ = rdb.Close() })
			stream := "outboxce." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
			t.Cleanup(func() { rdb.Del(context.Background(), stream, redissink.DedupKey(stream)) })
			s, err := redissink.New(rdb, redissink.Config{Stream: stream, Envelope: tt.format})
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
			entries, err := rdb.XRange(t.Context(), stream, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for _, x := range entries {
				h := map[string]any{}
				var body []byte
				for k, v := range x.Values {
					switch k {
					case redissink.FieldData:
						body = []byte(v.(string))
					case redissink.FieldEnvelope:
						if tt.mode == binding.EncodingStructured {
							body = []byte(v.(string))
						}
					default:
						h[k] = v
					}
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: redissink.CloudEventsPrefix, ContentType: redissink.FieldContentType, Body: body})
				if err != nil {
					t.Fatalf("the SDK cannot read an entry (%v): %v", x.Values, err)
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
				if x.Values[redissink.FieldID] != e.ID || x.Values[redissink.FieldType] != e.Type {
					t.Errorf("id and type fields %v %v, want %s %s", x.Values[redissink.FieldID], x.Values[redissink.FieldType], e.ID, e.Type)
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
	for _, tt := range []struct {
		cfg   redissink.Config
		field string
	}{
		{redissink.Config{Envelope: "binary"}, "redissink.Config.Envelope"},
		{redissink.Config{CloudEventsSource: "/x"}, "redissink.Config.CloudEventsSource"},
	} {
		var fe *outbox.FieldError
		if err := tt.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
}
