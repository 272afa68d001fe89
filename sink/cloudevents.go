package sink

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/fitiq/outbox"
)

// EnvelopeFormat is how a sink puts an event into a message: the Envelope field of
// every sink's Config.
type EnvelopeFormat string

// The envelope formats.
const (
	// EnvelopeOutbox is the JSON document of Envelope, with the event's payload in it.
	// The default (the zero value means it too).
	EnvelopeOutbox EnvelopeFormat = "outbox"
	// EnvelopeCloudEventsStructured is a CloudEvents 1.0 event in the structured
	// content mode: the message's body is the whole event as a CloudEvents JSON
	// document (media type application/cloudevents+json).
	EnvelopeCloudEventsStructured EnvelopeFormat = "cloudevents"
	// EnvelopeCloudEventsBinary is a CloudEvents 1.0 event in the binary content mode:
	// the body is the event's payload, and the context attributes go in the
	// transport's headers (attributes, properties, fields) as the protocol binding
	// says. A sink whose transport cannot carry an event's attributes (SQS's ten
	// message attributes, Pub/Sub's 1024-byte attribute values) sends that event in
	// the structured mode instead.
	EnvelopeCloudEventsBinary EnvelopeFormat = "cloudevents-binary"
)

// ParseEnvelopeFormat returns the format s names: outbox, cloudevents or
// cloudevents-binary.
func ParseEnvelopeFormat(s string) (EnvelopeFormat, error) {
	f := EnvelopeFormat(s)
	if !f.valid() || s == "" {
		return "", fmt.Errorf("unknown envelope %q (want %s, %s or %s)", s, EnvelopeOutbox, EnvelopeCloudEventsStructured, EnvelopeCloudEventsBinary)
	}
	return f, nil
}

func (f EnvelopeFormat) valid() bool {
	switch f {
	case "", EnvelopeOutbox, EnvelopeCloudEventsStructured, EnvelopeCloudEventsBinary:
		return true
	}
	return false
}

// CloudEvents reports whether f is one of the CloudEvents formats.
func (f EnvelopeFormat) CloudEvents() bool {
	return f == EnvelopeCloudEventsStructured || f == EnvelopeCloudEventsBinary
}

// CloudEvents constants.
const (
	// CloudEventsSpecVersion is the specversion of the events the sinks send.
	CloudEventsSpecVersion = "1.0"
	// CloudEventsContentType is the media type of a structured-mode message: the
	// CloudEvents JSON event format.
	CloudEventsContentType = "application/cloudevents+json"
	// DefaultCloudEventsSource is the source attribute unless a sink's Config says
	// otherwise. The outbox cannot know the application's name; a relative
	// URI-reference is what the specification allows for a producer without an
	// authority of its own, and since event IDs are UUIDs, source + id stays unique
	// whatever source is chosen. Set your own ("/orders", "urn:acme:orders",
	// "https://orders.example.com") so that receivers can tell producers apart.
	DefaultCloudEventsSource = "/outbox"
)

// The extension attributes that carry the event's other fields. Names are lower-case
// letters and digits, at most 20 characters, as the specification asks. An extension
// whose value is empty, zero or false is left out: absent means that.
const (
	ExtensionUserID      = "outboxuserid"      // Event.UserID (String)
	ExtensionOrderingKey = "outboxorderingkey" // Event.OrderingKey (String)
	ExtensionPriority    = "outboxpriority"    // Event.Priority (Integer)
	ExtensionIsNew       = "outboxisnew"       // Event.IsNewRecord (Boolean)
	ExtensionAttempt     = "outboxattempt"     // the delivery attempt, 1 for the first (Integer); always present
	ExtensionMetadata    = "outboxmetadata"    // Event.Metadata as a JSON object, in a String
	// The Distributed Tracing extension's attributes, from the event's metadata of the
	// same names (see outbox.TraceMetadataKeys).
	ExtensionTraceparent = "traceparent"
	ExtensionTracestate  = "tracestate"
)

// AttributeKind is the CloudEvents type of an attribute's value.
type AttributeKind int

// The kinds of attribute value the sinks send.
const (
	KindString       AttributeKind = iota
	KindInteger                    // a 32-bit signed integer, in decimal
	KindBoolean                    // "true" or "false"
	KindTimestamp                  // RFC 3339
	KindURIReference               // source
)

// Attribute is one CloudEvents context attribute: its name, its value in the
// canonical string form, and its type.
type Attribute struct {
	Name  string
	Value string
	Kind  AttributeKind
}

// Int returns the value of an Integer attribute.
func (a Attribute) Int() int64 {
	n, _ := strconv.ParseInt(a.Value, 10, 64)
	return n
}

// CloudEventAttributes returns the context attributes of e as a CloudEvent from
// source, in a fixed order: specversion, id, source, type, subject (the entity ID),
// time (created at), datacontenttype (application/json, when e has a payload), then
// the extensions. It fails, permanently, when a value cannot be a CloudEvents
// attribute: a type, entity, user or ordering key holding a control character or a
// Unicode noncharacter, a priority outside the 32-bit Integer range.
func CloudEventAttributes(e outbox.Event, source string) ([]Attribute, error) {
	if source == "" {
		source = DefaultCloudEventsSource
	}
	attrs := make([]Attribute, 0, 16)
	add := func(name, value string, kind AttributeKind) {
		attrs = append(attrs, Attribute{Name: name, Value: value, Kind: kind})
	}
	for _, f := range []struct{ what, v string }{{"type", e.Type}, {"entity ID", e.EntityID}, {"user ID", e.UserID}, {"ordering key", e.OrderingKey}} {
		if err := checkString(f.v); err != nil {
			return nil, outbox.Permanent(fmt.Errorf("event %s cannot be a CloudEvent: its %s %w", e.ID, f.what, err))
		}
	}
	if e.Priority < math.MinInt32 || e.Priority > math.MaxInt32 {
		return nil, outbox.Permanent(fmt.Errorf("event %s cannot be a CloudEvent: its priority %d is outside the 32-bit Integer range", e.ID, e.Priority))
	}
	add("specversion", CloudEventsSpecVersion, KindString)
	add("id", e.ID, KindString)
	add("source", source, KindURIReference)
	add("type", e.Type, KindString)
	add("subject", e.EntityID, KindString)
	if !e.CreatedAt.IsZero() {
		add("time", e.CreatedAt.UTC().Format(time.RFC3339Nano), KindTimestamp)
	}
	if len(e.Payload) > 0 {
		add("datacontenttype", ContentType, KindString)
	}
	if e.UserID != "" {
		add(ExtensionUserID, e.UserID, KindString)
	}
	if e.OrderingKey != "" {
		add(ExtensionOrderingKey, e.OrderingKey, KindString)
	}
	if e.Priority != 0 {
		add(ExtensionPriority, strconv.Itoa(e.Priority), KindInteger)
	}
	if e.IsNewRecord {
		add(ExtensionIsNew, "true", KindBoolean)
	}
	add(ExtensionAttempt, strconv.Itoa(min(max(e.Attempts, 0), math.MaxInt32)), KindInteger)
	if len(e.Metadata) > 0 {
		b, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, outbox.Permanent(fmt.Errorf("encode event %s: metadata: %w", e.ID, err))
		}
		add(ExtensionMetadata, escapeJSONText(string(b)), KindString)
	}
	for _, k := range []string{ExtensionTraceparent, ExtensionTracestate} {
		if v := e.Metadata[k]; v != "" && checkString(v) == nil {
			add(k, v, KindString)
		}
	}
	return attrs, nil
}

// checkString reports why v cannot be a CloudEvents String: the specification
// forbids the control characters (U+0000-U+001F, U+007F-U+009F) and the Unicode
// noncharacters.
func checkString(v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range v {
		if forbidden(r) {
			return fmt.Errorf("holds %U, which a CloudEvents String may not", r)
		}
	}
	return nil
}

func forbidden(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || (r >= 0xfdd0 && r <= 0xfdef) || r&0xfffe == 0xfffe
}

// escapeJSONText writes the characters a CloudEvents String may not hold as JSON
// escapes. json.Marshal escapes the C0 controls already; the C1 controls and the
// noncharacters it leaves as they are, and in JSON text they can only stand inside a
// string, where the escape means the same character.
func escapeJSONText(s string) string {
	if !strings.ContainsFunc(s, forbidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if !forbidden(r) {
			b.WriteRune(r)
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		} else {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// EncodeCloudEvent returns e as a CloudEvents JSON document (the structured content
// mode's body): its context attributes (see CloudEventAttributes), Integer and
// Boolean ones as JSON numbers and booleans, and its payload as data.
func EncodeCloudEvent(e outbox.Event, source string) ([]byte, error) {
	attrs, err := CloudEventAttributes(e, source)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(256 + len(e.Payload))
	b.WriteByte('{')
	for i, a := range attrs {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, a.Name)
		b.WriteByte(':')
		switch a.Kind {
		case KindInteger, KindBoolean:
			b.WriteString(a.Value)
		default:
			writeJSONString(&b, a.Value)
		}
	}
	if len(e.Payload) > 0 {
		if !json.Valid(e.Payload) {
			return nil, outbox.Permanent(fmt.Errorf("encode event %s: the payload is not valid JSON", e.ID))
		}
		b.WriteString(`,"data":`)
		b.Write(e.Payload)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // a string always encodes
	b.Write(enc)
}

// PercentEncode encodes a header value as the CloudEvents HTTP and NATS bindings
// ask: space, double quote, percent and every byte outside printable ASCII become
// %XY (the UTF-8 bytes of a character, each).
func PercentEncode(v string) string {
	need := false
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == '"' || c == '%' {
			need = true
			break
		}
	}
	if !need {
		return v
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(v) + 16)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c > '~' || c == '"' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// CheckEnvelope checks the Envelope and CloudEventsSource fields of a sink's Config,
// config naming it ("httpsink.Config"): a known format, and a source that is a
// URI-reference, given only with a CloudEvents format.
func CheckEnvelope(config string, f EnvelopeFormat, source string) error {
	if !f.valid() {
		return &outbox.FieldError{Field: config + ".Envelope", Problem: fmt.Sprintf("unknown envelope %q (want sink.EnvelopeOutbox, sink.EnvelopeCloudEventsStructured or sink.EnvelopeCloudEventsBinary)", string(f))}
	}
	if source == "" {
		return nil
	}
	if !f.CloudEvents() {
		return &outbox.FieldError{Field: config + ".CloudEventsSource", Problem: fmt.Sprintf("is set (%q) but Envelope is %s: the source is a CloudEvents attribute", source, cmp.Or(f, EnvelopeOutbox))}
	}
	if err := CheckSource(source); err != nil {
		return &outbox.FieldError{Field: config + ".CloudEventsSource", Problem: err.Error()}
	}
	return nil
}

// CheckSource reports why s cannot be a CloudEvents source, a non-empty
// URI-reference (RFC 3986: ASCII letters, digits and -._~:/?#[]@!$&'()*+,;=%, other
// characters percent-encoded).
func CheckSource(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:/?#[]@!$&'()*+,;=%", c) >= 0
		if !ok {
			return fmt.Errorf("%q is not a URI-reference: it holds %q (percent-encode it)", s, s[i])
		}
	}
	if _, err := url.Parse(s); err != nil {
		return fmt.Errorf("%q is not a URI-reference: %v", s, err)
	}
	return nil
}

// Encoder turns events into message bodies in one envelope format. The zero Encoder
// encodes the outbox envelope.
type Encoder struct {
	format EnvelopeFormat
	source string
}

// NewEncoder returns the Encoder of format (the outbox envelope when empty) with
// source as the CloudEvents source (DefaultCloudEventsSource when empty). Check them
// with CheckEnvelope first.
func NewEncoder(format EnvelopeFormat, source string) Encoder {
	if format == "" {
		format = EnvelopeOutbox
	}
	if source == "" {
		source = DefaultCloudEventsSource
	}
	return Encoder{format: format, source: source}
}

// Format returns the encoder's envelope format.
func (enc Encoder) Format() EnvelopeFormat { return cmp.Or(enc.format, EnvelopeOutbox) }

// Message is an event encoded for a transport.
type Message struct {
	// Body is the message's body: the outbox envelope, the CloudEvents JSON document,
	// or (binary mode) the event's payload, nil when it has none.
	Body []byte
	// ContentType is the body's media type: application/json for the outbox
	// envelope and for a binary-mode payload (the datacontenttype attribute; empty
	// when there is no payload), application/cloudevents+json for a structured-mode
	// CloudEvent.
	ContentType string
	// Binary is set for a CloudEvent in the binary content mode.
	Binary bool
	// Attributes are, in the binary mode, the context attributes but datacontenttype
	// (which ContentType carries), for the transport's headers.
	Attributes []Attribute
}

// Encode returns e in the encoder's format.
func (enc Encoder) Encode(e outbox.Event) (Message, error) {
	switch enc.Format() {
	case EnvelopeCloudEventsStructured:
		return enc.Structured(e)
	case EnvelopeCloudEventsBinary:
		attrs, err := CloudEventAttributes(e, enc.source)
		if err != nil {
			return Message{}, err
		}
		m := Message{Binary: true, Attributes: attrs[:0:0]}
		for _, a := range attrs {
			if a.Name == "datacontenttype" {
				m.ContentType = a.Value
				continue
			}
			m.Attributes = append(m.Attributes, a)
		}
		if len(e.Payload) > 0 {
			if !json.Valid(e.Payload) {
				return Message{}, outbox.Permanent(fmt.Errorf("encode event %s: the payload is not valid JSON", e.ID))
			}
			m.Body = e.Payload
		}
		return m, nil
	default:
		body, err := Encode(e)
		return Message{Body: body, ContentType: ContentType}, err
	}
}

// Structured returns e as a structured-mode CloudEvent, whatever the encoder's
// format: what a sink sends for an event whose attributes its transport cannot carry
// in the binary mode.
func (enc Encoder) Structured(e outbox.Event) (Message, error) {
	body, err := EncodeCloudEvent(e, enc.source)
	if err != nil {
		return Message{}, err
	}
	return Message{Body: body, ContentType: CloudEventsContentType}, nil
}
