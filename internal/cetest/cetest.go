// Package cetest reads what the sinks send with an independent CloudEvents parser,
// the CloudEvents Go SDK, and checks it against the outbox event it came from. It is
// for tests only: no library package imports it, so the SDK stays out of the
// library's dependencies (the layout test holds every other package to that).
package cetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// Message is a message of a transport with headers (or attributes, properties,
// fields), as a receiver got it.
type Message struct {
	// Headers are the message's headers: name to value, a string, or (AMQP) a
	// native bool or integer.
	Headers map[string]any
	// Prefix is the binding's prefix of attribute headers: "ce-", "ce_",
	// "cloudEvents_". Matched without regard to case.
	Prefix string
	// ContentType names the header that tells the structured mode (a value starting
	// application/cloudevents) from the binary one, and in the binary mode carries
	// datacontenttype, unless DataContentTypeIsAttribute (NATS: ce-datacontenttype).
	ContentType                string
	DataContentTypeIsAttribute bool
	// PercentEncoded says the binding percent-encodes header values (HTTP, NATS).
	PercentEncoded bool
	Body           []byte
}

// ToEvent reads m with the SDK and returns its event, validated, and the mode it
// came in.
func ToEvent(m Message) (*event.Event, binding.Encoding, error) {
	r := &reader{m: m, specs: spec.WithPrefix(m.Prefix)}
	ev, err := binding.ToEvent(context.Background(), r)
	if err != nil {
		return nil, binding.EncodingUnknown, err
	}
	if err := ev.Validate(); err != nil {
		return nil, binding.EncodingUnknown, err
	}
	return ev, r.ReadEncoding(), nil
}

// reader is a binding.MessageReader over a Message.
type reader struct {
	m     Message
	specs *spec.Versions
}

func (r *reader) header(name string) (any, bool) {
	for k, v := range r.m.Headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

func (r *reader) format() format.Format {
	if r.m.ContentType == "" {
		return nil
	}
	if v, ok := r.header(r.m.ContentType); ok {
		if s, ok := v.(string); ok && format.IsFormat(s) {
			return format.Lookup(s)
		}
	}
	return nil
}

func (r *reader) version() spec.Version {
	if v, ok := r.header(r.specs.PrefixedSpecVersionName()); ok {
		if s, ok := v.(string); ok {
			return r.specs.Version(s)
		}
	}
	return nil
}

func (r *reader) ReadEncoding() binding.Encoding {
	switch {
	case r.format() != nil:
		return binding.EncodingStructured
	case r.version() != nil:
		return binding.EncodingBinary
	}
	return binding.EncodingUnknown
}

func (r *reader) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	f := r.format()
	if f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, bytes.NewReader(r.m.Body))
}

func (r *reader) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	v := r.version()
	if v == nil || r.format() != nil {
		return binding.ErrNotBinary
	}
	for k, val := range r.m.Headers {
		if s, ok := val.(string); ok && r.m.PercentEncoded {
			dec, err := PercentDecode(s)
			if err != nil {
				return fmt.Errorf("header %s: %w", k, err)
			}
			val = dec
		}
		switch {
		case len(k) > len(r.m.Prefix) && strings.EqualFold(k[:len(r.m.Prefix)], r.m.Prefix):
			if attr := v.Attribute(k); attr != nil {
				if err := w.SetAttribute(attr, val); err != nil {
					return fmt.Errorf("attribute %s: %w", k, err)
				}
			} else if err := w.SetExtension(strings.ToLower(k[len(r.m.Prefix):]), val); err != nil {
				return fmt.Errorf("extension %s: %w", k, err)
			}
		case !r.m.DataContentTypeIsAttribute && strings.EqualFold(k, r.m.ContentType):
			if err := w.SetAttribute(v.AttributeFromKind(spec.DataContentType), val); err != nil {
				return err
			}
		}
	}
	if r.m.Body != nil {
		return w.SetData(bytes.NewReader(r.m.Body))
	}
	return nil
}

func (r *reader) value(name string) any {
	v, ok := r.header(name)
	if !ok {
		return nil
	}
	if s, ok := v.(string); ok && r.m.PercentEncoded {
		if dec, err := PercentDecode(s); err == nil {
			return dec
		}
	}
	return v
}

// GetAttribute is binding.MessageMetadataReader's.
func (r *reader) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	v := r.version()
	if v == nil {
		return nil, nil
	}
	attr := v.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if k == spec.DataContentType && !r.m.DataContentTypeIsAttribute {
		return attr, r.value(r.m.ContentType)
	}
	return attr, r.value(attr.PrefixedName())
}

// GetExtension is binding.MessageMetadataReader's.
func (r *reader) GetExtension(name string) any { return r.value(r.m.Prefix + name) }

// PercentDecode undoes the HTTP and NATS bindings' percent-encoding of a header
// value, refusing a result that is not UTF-8 as they ask.
func PercentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%q: %% at the end", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%q: bad percent-encoding %q", s, s[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	if !utf8.ValidString(b.String()) {
		return "", fmt.Errorf("%q decodes to invalid UTF-8", s)
	}
	return b.String(), nil
}

// FromHTTP reads the request with the SDK's own HTTP binding, after undoing the
// percent-encoding of the ce- headers that the binding (1.0.2) asks a receiver to
// undo and the SDK does not. body is the request's body, read already.
func FromHTTP(req *http.Request, body []byte) (*event.Event, binding.Encoding, error) {
	h := req.Header.Clone()
	for k, vs := range h {
		if !strings.HasPrefix(strings.ToLower(k), "ce-") {
			continue
		}
		for i, v := range vs {
			dec, err := PercentDecode(v)
			if err != nil {
				return nil, binding.EncodingUnknown, fmt.Errorf("header %s: %w", k, err)
			}
			vs[i] = dec
		}
	}
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	enc := msg.ReadEncoding()
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, enc, err
	}
	if err := ev.Validate(); err != nil {
		return nil, enc, err
	}
	return ev, enc, nil
}

// FromJSON reads a structured-mode body: json.Unmarshal into the SDK's event, then
// its Validate.
func FromJSON(body []byte) (*event.Event, error) {
	var ev event.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, err
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Check reports, through t, where ev differs from the CloudEvent that e makes with
// source (sink.DefaultCloudEventsSource when empty): every attribute and extension
// (none more), and the data.
func Check(t testing.TB, ev *event.Event, e outbox.Event, source string) {
	t.Helper()
	if err := Diff(ev, e, source); err != nil {
		t.Errorf("event %s: %v", e.ID, err)
	}
}

// Diff returns where ev differs from the CloudEvent e makes with source, or nil.
func Diff(ev *event.Event, e outbox.Event, source string) error {
	if source == "" {
		source = sink.DefaultCloudEventsSource
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if ev.SpecVersion() != "1.0" {
		bad("specversion %q, want 1.0", ev.SpecVersion())
	}
	if ev.ID() != e.ID {
		bad("id %q, want %q", ev.ID(), e.ID)
	}
	if ev.Source() != source {
		bad("source %q, want %q", ev.Source(), source)
	}
	if ev.Type() != e.Type {
		bad("type %q, want %q", ev.Type(), e.Type)
	}
	if ev.Subject() != e.EntityID {
		bad("subject %q, want the entity ID %q", ev.Subject(), e.EntityID)
	}
	if !ev.Time().Equal(e.CreatedAt) {
		bad("time %s, want created at %s", ev.Time().Format(time.RFC3339Nano), e.CreatedAt.UTC().Format(time.RFC3339Nano))
	}
	if len(e.Payload) > 0 {
		if ev.DataContentType() != "application/json" {
			bad("datacontenttype %q, want application/json", ev.DataContentType())
		}
		if !jsonEqual(ev.Data(), e.Payload) {
			bad("data %s, want the payload %s", ev.Data(), e.Payload)
		}
	} else if len(ev.Data()) > 0 {
		bad("data %s, want none", ev.Data())
	}
	want := map[string]string{sink.ExtensionAttempt: strconv.Itoa(e.Attempts)}
	if e.UserID != "" {
		want[sink.ExtensionUserID] = e.UserID
	}
	if e.OrderingKey != "" {
		want[sink.ExtensionOrderingKey] = e.OrderingKey
	}
	if e.Priority != 0 {
		want[sink.ExtensionPriority] = strconv.Itoa(e.Priority)
	}
	if e.IsNewRecord {
		want[sink.ExtensionIsNew] = "true"
	}
	for _, k := range []string{sink.ExtensionTraceparent, sink.ExtensionTracestate} {
		if v := e.Metadata[k]; v != "" {
			want[k] = v
		}
	}
	got := map[string]string{}
	for k, v := range ev.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			bad("extension %s: %v", k, err)
		}
		got[k] = s
	}
	if len(e.Metadata) > 0 {
		var md map[string]string
		if err := json.Unmarshal([]byte(got[sink.ExtensionMetadata]), &md); err != nil {
			bad("extension %s %q: %v", sink.ExtensionMetadata, got[sink.ExtensionMetadata], err)
		} else if !mapsEqual(md, e.Metadata) {
			bad("extension %s holds %v, want the metadata %v", sink.ExtensionMetadata, md, e.Metadata)
		}
		delete(got, sink.ExtensionMetadata)
	}
	for k, w := range want {
		if got[k] != w {
			bad("extension %s = %q, want %q", k, got[k], w)
		}
		delete(got, k)
	}
	for k, v := range got {
		bad("extension %s = %q, not expected", k, v)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Events returns a few events that exercise the mapping: every optional field set and
// none, a payload and none, a user and metadata with a trace, characters that the
// HTTP and NATS bindings percent-encode. IDs are fresh; created at is now, to the
// microsecond as stores keep it.
func Events(n int) []outbox.Event {
	now := time.Now().UTC().Truncate(time.Microsecond)
	out := make([]outbox.Event, n)
	for i := range out {
		e := outbox.Event{
			ID:          uuid.Must(uuid.NewV7()).String(),
			Type:        "order.created",
			EntityID:    fmt.Sprintf("order-%d", i),
			CreatedAt:   now.Add(time.Duration(i) * time.Millisecond),
			Attempts:    1 + i%3,
			IsNewRecord: i%2 == 0,
			Payload:     json.RawMessage(fmt.Sprintf(`{"n":%d,"total":42.5,"note":"caf\u00e9"}`, i)),
		}
		switch i % 4 {
		case 1:
			e.Type = "order.updated"
			e.UserID = "user-7"
			e.OrderingKey = e.EntityID
			e.Priority = 10
			e.Metadata = map[string]string{
				"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"source":      "checkout",
			}
		case 2:
			e.Payload = nil // an event without payload: no data
			e.Priority = -3
		case 3:
			e.EntityID = fmt.Sprintf("commande %d é \"x\" 100%%", i) // encoded in HTTP/NATS headers
			e.UserID = "utilisateur-é"
			e.Metadata = map[string]string{"note": "line1\nline2", "app": "billing"}
		}
		out[i] = e
	}
	return out
}
