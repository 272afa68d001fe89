package sink_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
)

// TestCloudEventsStructuredParsedBySDK: the structured encoder's document is read by
// the CloudEvents Go SDK (json.Unmarshal into its event, Validate) as the event it
// came from: id, source, type, subject, time, data, every extension.
func TestCloudEventsStructuredParsedBySDK(t *testing.T) {
	t.Parallel()
	for _, source := range []string{"", "https://orders.example.com/outbox", "urn:acme:orders"} {
		for _, e := range cetest.Events(8) {
			body, err := sink.EncodeCloudEvent(e, source)
			if err != nil {
				t.Fatalf("event %s: %v", e.ID, err)
			}
			ev, err := cetest.FromJSON(body)
			if err != nil {
				t.Fatalf("the SDK refuses %s: %v", body, err)
			}
			cetest.Check(t, ev, e, source)
		}
	}
}

// TestCloudEventsBinaryParsedBySDK: the binary encoder's attributes, put in headers
// as the Kafka binding says, are read by the SDK (its binding/spec) as the event.
func TestCloudEventsBinaryParsedBySDK(t *testing.T) {
	t.Parallel()
	enc := sink.NewEncoder(sink.EnvelopeCloudEventsBinary, "")
	for _, e := range cetest.Events(8) {
		msg, err := enc.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if !msg.Binary || (len(e.Payload) > 0) != (msg.ContentType == sink.ContentType) || !bytes.Equal(msg.Body, e.Payload) {
			t.Fatalf("event %s: binary message %+v", e.ID, msg)
		}
		h := map[string]any{}
		if msg.ContentType != "" {
			h["content-type"] = msg.ContentType
		}
		for _, a := range msg.Attributes {
			if a.Name == "datacontenttype" {
				t.Errorf("datacontenttype among the attributes: the content type carries it")
			}
			h["ce_"+a.Name] = a.Value
		}
		ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: "ce_", ContentType: "content-type", Body: msg.Body})
		if err != nil {
			t.Fatalf("event %s: %v", e.ID, err)
		}
		if mode != binding.EncodingBinary {
			t.Errorf("read as %v, want binary", mode)
		}
		cetest.Check(t, ev, e, "")
	}
}

// TestCloudEventsExtensionNames: every attribute name is what the specification
// allows (lower-case letters and digits, at most 20), and the order is fixed.
func TestCloudEventsExtensionNames(t *testing.T) {
	t.Parallel()
	name := regexp.MustCompile(`^[a-z0-9]{1,20}$`)
	e := cetest.Events(2)[1] // every optional field set
	attrs, err := sink.CloudEventAttributes(e, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range attrs {
		if !name.MatchString(a.Name) {
			t.Errorf("attribute name %q is not [a-z0-9]{1,20}", a.Name)
		}
		names = append(names, a.Name)
	}
	want := "specversion id source type subject time datacontenttype outboxuserid outboxorderingkey outboxpriority outboxattempt outboxmetadata traceparent"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("attributes %s\nwant %s", got, want)
	}
}

// TestCloudEventsRefusesWhatCannotBeAnAttribute: a control character in the type or
// entity ID cannot be a CloudEvents String: the event is given up, saying why, not
// sent altered. Metadata can hold anything: its JSON escapes what a String may not.
func TestCloudEventsRefusesWhatCannotBeAnAttribute(t *testing.T) {
	t.Parallel()
	e := cetest.Events(1)[0]
	bad := e
	bad.EntityID = "order\n1"
	for _, f := range []sink.EnvelopeFormat{sink.EnvelopeCloudEventsStructured, sink.EnvelopeCloudEventsBinary} {
		_, err := sink.NewEncoder(f, "").Encode(bad)
		if err == nil || !outbox.IsPermanent(err) || !strings.Contains(err.Error(), "entity ID") || !strings.Contains(err.Error(), "U+000A") {
			t.Errorf("%s: entity ID with a newline: %v, want a permanent error naming it", f, err)
		}
	}
	if _, err := sink.NewEncoder(sink.EnvelopeOutbox, "").Encode(bad); err != nil {
		t.Errorf("the outbox envelope takes any entity ID: %v", err)
	}
	odd := e
	odd.Metadata = map[string]string{"k\u0085": "v\uFFFE\U0001FFFF\x01"}
	body, err := sink.EncodeCloudEvent(odd, "")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := cetest.FromJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	cetest.Check(t, ev, odd, "")
	md, _ := ev.Extensions()[sink.ExtensionMetadata].(string)
	if strings.ContainsAny(md, "\u0085\uFFFE\x01") {
		t.Errorf("metadata extension holds characters a String may not: %q", md)
	}
}

// TestEnvelopeDefaultIsTheOutboxEnvelope: the zero Encoder, and EnvelopeOutbox, send
// exactly what Encode does: nothing changes for a sink that does not choose.
func TestEnvelopeDefaultIsTheOutboxEnvelope(t *testing.T) {
	t.Parallel()
	for _, e := range cetest.Events(4) {
		want, err := sink.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, enc := range []sink.Encoder{{}, sink.NewEncoder("", ""), sink.NewEncoder(sink.EnvelopeOutbox, "")} {
			msg, err := enc.Encode(e)
			if err != nil || !bytes.Equal(msg.Body, want) || msg.ContentType != sink.ContentType || msg.Binary || msg.Attributes != nil {
				t.Errorf("%+v, %v; want the outbox envelope", msg, err)
			}
		}
	}
}

func TestCheckEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format        sink.EnvelopeFormat
		source, field string
	}{
		{"", "", ""},
		{sink.EnvelopeOutbox, "", ""},
		{sink.EnvelopeCloudEventsStructured, "", ""},
		{sink.EnvelopeCloudEventsBinary, "https://example.com/orders?x=1#f", ""},
		{sink.EnvelopeCloudEventsStructured, "/orders", ""},
		{sink.EnvelopeCloudEventsStructured, "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", ""},
		{"CloudEvents", "", "x.Config.Envelope"},
		{"json", "", "x.Config.Envelope"},
		{sink.EnvelopeOutbox, "/orders", "x.Config.CloudEventsSource"},
		{"", "/orders", "x.Config.CloudEventsSource"},
		{sink.EnvelopeCloudEventsBinary, "/my orders", "x.Config.CloudEventsSource"},
		{sink.EnvelopeCloudEventsBinary, "/commandes-é", "x.Config.CloudEventsSource"},
		{sink.EnvelopeCloudEventsBinary, "http://[::1", "x.Config.CloudEventsSource"},
	}
	for _, tt := range tests {
		err := sink.CheckEnvelope("x.Config", tt.format, tt.source)
		var fe *outbox.FieldError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%q %q: %v", tt.format, tt.source, err)
		case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
			t.Errorf("%q %q: %v, want an error naming %s", tt.format, tt.source, err, tt.field)
		}
	}
	for _, s := range []string{"outbox", "cloudevents", "cloudevents-binary"} {
		if f, err := sink.ParseEnvelopeFormat(s); err != nil || string(f) != s {
			t.Errorf("ParseEnvelopeFormat(%q) = %q, %v", s, f, err)
		}
	}
	for _, s := range []string{"", "ce", "CloudEvents"} {
		if _, err := sink.ParseEnvelopeFormat(s); err == nil {
			t.Errorf("ParseEnvelopeFormat(%q) took it", s)
		}
	}
}

// TestPercentEncode: the HTTP and NATS bindings' example, and a value that needs
// nothing.
func TestPercentEncode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Euro € 😀":          "Euro%20%E2%82%AC%20%F0%9F%98%80",
		"order-1":           "order-1",
		`a "b" 100%`:        "a%20%22b%22%20100%25",
		"2026-01-02T03:04Z": "2026-01-02T03:04Z",
		"tab\there":         "tab%09here",
	} {
		if got := sink.PercentEncode(in); got != want {
			t.Errorf("PercentEncode(%q) = %q, want %q", in, got, want)
		}
		if back, err := cetest.PercentDecode(sink.PercentEncode(in)); err != nil || back != in {
			t.Errorf("%q decodes back to %q, %v", in, back, err)
		}
	}
}

// TestCloudEventsTimeKeepsTheInstant: time is created at in UTC, RFC 3339 with the
// fraction it has.
func TestCloudEventsTimeKeepsTheInstant(t *testing.T) {
	t.Parallel()
	e := cetest.Events(1)[0]
	e.CreatedAt = time.Date(2026, 1, 2, 4, 4, 5, 123456000, time.FixedZone("CET", 3600))
	body, err := sink.EncodeCloudEvent(e, "")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["time"] != "2026-01-02T03:04:05.123456Z" {
		t.Errorf("time %v", doc["time"])
	}
}
