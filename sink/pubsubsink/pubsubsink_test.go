package pubsubsink_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/pubsubsink"
	"github.com/fitiq/outbox/sink/sinktest"
)

func newEvent(entity, key string) outbox.Event {
	now := outbox.Timestamp(time.Now())
	return outbox.Event{
		ID: uuid.Must(uuid.NewV7()).String(), Type: "order.created", EntityID: entity, UserID: "u1", OrderingKey: key,
		IsNewRecord: true, Payload: json.RawMessage(fmt.Sprintf(`{"entity":%q}`, entity)), Status: outbox.StatusProcessing,
		CreatedAt: now, UpdatedAt: now, Attempts: 1,
	}
}

// startTopic starts a pstest server with the topic and returns it with a sink
// publishing there.
func startTopic(t *testing.T, rx *reactor) (*server, *pubsubsink.Sink) {
	t.Helper()
	srv := newServer(t, rx)
	topic := "projects/" + testProject + "/topics/orders"
	if err := srv.createTopic(t.Context(), topic); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, srv.Addr, pubsubsink.Config{Project: testProject, Topic: "orders", PublishTimeout: testPublishTimeout})
	t.Cleanup(func() { _ = s.Close() })
	if s.Topic() != topic {
		t.Fatalf("Topic() = %q, want %q", s.Topic(), topic)
	}
	return srv, s
}

// TestOrderingKeys: each message carries its event's ordering key, and the server gets
// a key's messages in the order the outbox sent them (one event of a key per batch, as
// the processor claims them); the data is the envelope, the attributes name the event.
func TestOrderingKeys(t *testing.T) {
	t.Parallel()
	srv, s := startTopic(t, &reactor{})
	var sent []outbox.Event
	for round := range 5 {
		batch := []outbox.Event{newEvent(fmt.Sprintf("a%d", round), "ka"), newEvent(fmt.Sprintf("b%d", round), "kb"), newEvent(fmt.Sprintf("c%d", round), "")}
		batch[0].Metadata = map[string]string{outbox.MetadataTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		for i, err := range s.HandleBatch(t.Context(), batch) {
			if err != nil {
				t.Fatalf("round %d, event %d: %v", round, i, err)
			}
		}
		sent = append(sent, batch...)
	}
	msgs := srv.Messages()
	if len(msgs) != len(sent) {
		t.Fatalf("the server took %d messages, want %d", len(msgs), len(sent))
	}
	byID := map[string]outbox.Event{}
	for _, e := range sent {
		byID[e.ID] = e
	}
	order := map[string][]string{}
	for _, m := range msgs {
		id := m.Attributes[pubsubsink.AttributeID]
		e, ok := byID[id]
		if !ok {
			t.Fatalf("a message of an unknown event: %v", m.Attributes)
		}
		var env sink.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil || env.ID != id {
			t.Errorf("data is not the event's envelope: %v: %s", err, m.Data)
		}
		if m.OrderingKey != e.OrderingKey || m.Attributes[pubsubsink.AttributeType] != e.Type {
			t.Errorf("event %s: ordering key %q, attributes %v", id, m.OrderingKey, m.Attributes)
		}
		if e.Metadata[outbox.MetadataTraceparent] != m.Attributes[outbox.MetadataTraceparent] {
			t.Errorf("event %s: traceparent %q, want %q", id, m.Attributes[outbox.MetadataTraceparent], e.Metadata[outbox.MetadataTraceparent])
		}
		order[m.OrderingKey] = append(order[m.OrderingKey], id)
	}
	for _, k := range []string{"ka", "kb"} {
		var want []string
		for _, e := range sent {
			if e.OrderingKey == k {
				want = append(want, e.ID)
			}
		}
		if !slices.Equal(order[k], want) {
			t.Errorf("key %s arrived as %v, want %v", k, order[k], want)
		}
	}
}

// TestPausedKeyResumes: a failed publish pauses its ordering key in the client; the
// sink resumes it, so the event's retry (the next delivery of that key) goes out,
// and other keys never stop.
func TestPausedKeyResumes(t *testing.T) {
	t.Parallel()
	rx := &reactor{fail: map[string]int{"k": 1}}
	srv, s := startTopic(t, rx)
	e, other := newEvent("a", "k"), newEvent("b", "other")
	errs := s.HandleBatch(t.Context(), []outbox.Event{e, other})
	if v := sinktest.Classify(errs[0]); v.Class != sinktest.Retry {
		t.Fatalf("the failed publish: %s (%v), want retry", v, errs[0])
	}
	if errs[1] != nil {
		t.Fatalf("the other key: %v", errs[1])
	}
	e.Attempts++
	if err := s.Handle(t.Context(), e); err != nil {
		t.Fatalf("the retry of the key's event: %v", err)
	}
	next := newEvent("a", "k")
	if err := s.Handle(t.Context(), next); err != nil {
		t.Fatalf("the key's next event: %v", err)
	}
	var got []string
	for _, m := range srv.Messages() {
		if m.OrderingKey == "k" {
			got = append(got, m.Attributes[pubsubsink.AttributeID])
		}
	}
	if want := []string{e.ID, next.ID}; !slices.Equal(got, want) {
		t.Fatalf("key k holds %v, want %v", got, want)
	}
}

// TestOversized: a message the client will not send (its envelope over a publish
// request's 10 MB) is given up; so is one whose payload alone is that large, without
// being encoded.
func TestOversized(t *testing.T) {
	t.Parallel()
	_, s := startTopic(t, &reactor{})
	for _, n := range []int{pubsub.MaxPublishRequestBytes - 100, pubsub.MaxPublishRequestBytes + 1} {
		e := newEvent("big", "")
		e.Payload = json.RawMessage(`{"pad":"` + strings.Repeat("x", n-10) + `"}`)
		err := s.Handle(t.Context(), e)
		if v := sinktest.Classify(err); v.Class != sinktest.GivenUp || !errors.Is(err, pubsub.ErrOversizedMessage) {
			t.Errorf("payload of %d bytes: %s (%v), want given up as oversized", len(e.Payload), v, err)
		}
	}
}

// TestOpen makes the client as the relay does, found by PUBSUB_EMULATOR_HOST, as the
// client library has it.
func TestOpen(t *testing.T) {
	srv := newServer(t, &reactor{})
	topic := "projects/" + testProject + "/topics/orders"
	if err := srv.createTopic(t.Context(), topic); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	cfg, err := pubsubsink.ParseURL("pubsub://" + testProject + "/orders")
	if err != nil {
		t.Fatal(err)
	}
	s, err := pubsubsink.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := newEvent("a", "k")
	if err := s.Handle(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := srv.Held(t.Context()); !slices.Equal(ids, []string{e.ID}) {
		t.Fatalf("held %v, want %s", ids, e.ID)
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  string
		want pubsubsink.Config
		bad  string
	}{
		{raw: "pubsub://my-project/orders", want: pubsubsink.Config{Project: "my-project", Topic: "orders"}},
		{raw: "pubsub://my-project/orders?endpoint=europe-west1-pubsub.googleapis.com:443",
			want: pubsubsink.Config{Project: "my-project", Topic: "orders", Endpoint: "europe-west1-pubsub.googleapis.com:443"}},
		{raw: "pubsub://my-project", bad: "want pubsub://PROJECT/TOPIC"},
		{raw: "pubsub://my-project/a/b", bad: "want pubsub://PROJECT/TOPIC"},
		{raw: "pubsub://my-project/orders?topic=x", bad: `unknown parameter "topic"`},
		{raw: "pubsub://my-project/goog-orders", bad: "pubsubsink.Config.Topic"},
		{raw: "gcp://my-project/orders", bad: "want pubsub://"},
	} {
		got, err := pubsubsink.ParseURL(tc.raw)
		switch {
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("ParseURL(%q) = %+v, %v; want an error with %q", tc.raw, got, err, tc.bad)
		case tc.bad == "" && err != nil:
			t.Errorf("ParseURL(%q): %v", tc.raw, err)
		case tc.bad == "" && got != tc.want:
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.raw, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   pubsubsink.Config
		field string
	}{
		{pubsubsink.Config{}, "pubsubsink.Config.Topic"},
		{pubsubsink.Config{Topic: "orders"}, "pubsubsink.Config.Project"},
		{pubsubsink.Config{Topic: "projects/p/topics/orders"}, "pubsubsink.Config.Topic"}, // "p" is too short for an ID
		{pubsubsink.Config{Project: "proj", Topic: "orders", PublishTimeout: -time.Second}, "pubsubsink.Config.PublishTimeout"},
		{pubsubsink.Config{Project: "has space", Topic: "orders"}, "pubsubsink.Config.Project"},
	} {
		var fe *outbox.FieldError
		if err := tc.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want a FieldError naming %s", tc.cfg, err, tc.field)
		}
	}
	if err := (pubsubsink.Config{Topic: "projects/my-project/topics/orders"}).Validate(); err != nil {
		t.Errorf("a full topic name: %v", err)
	}
	if _, err := pubsubsink.New(nil, pubsubsink.Config{Project: "proj", Topic: "orders"}); err == nil {
		t.Error("New(nil, …) did not fail")
	}
}
