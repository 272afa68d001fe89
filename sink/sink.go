// Package sink holds what the outbox's delivery targets share: the JSON envelope an
// event travels in (or, as each sink's Config.Envelope chooses, a CloudEvents 1.0
// event: see EnvelopeFormat and CloudEventAttributes), and the subject / routing-key
// templates that place it. The sinks
// themselves live in httpsink, natssink, amqpsink, kafkasink, redissink, sqssink (SQS
// and SNS) and pubsubsink; each is an outbox.Handler, uses the event ID as the
// receiver's deduplication key, and passes the fault matrix of sinktest.
package sink

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fitiq/outbox"
)

// ContentType is the media type of an encoded Envelope.
const ContentType = "application/json"

// Envelope is the JSON document every sink delivers for an event: the same fields over
// HTTP, NATS and AMQP, so that a receiver can move between transports. ID is the
// deduplication key: at-least-once delivery means a receiver may see an ID twice.
//
//	{
//	  "id": "0190f4c2-…",            // event ID (UUIDv7), also the Idempotency-Key / Nats-Msg-Id / message-id / Outbox-Id
//	  "type": "order.created",
//	  "entity_id": "…",
//	  "user_id": "…",                // omitted when empty
//	  "is_new_record": true,         // a create (true) or an update (false)
//	  "priority": 10,
//	  "ordering_key": "…",           // omitted when empty
//	  "metadata": {"source": "…"},   // omitted when empty
//	  "payload": {…},                // the event's JSON payload as enqueued; omitted when none
//	  "created_at": "2026-01-02T03:04:05.123456Z",
//	  "attempt": 1                   // 1 for the first delivery attempt, 2 for the first retry, …
//	}
type Envelope struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	EntityID    string            `json:"entity_id"`
	UserID      string            `json:"user_id,omitempty"`
	IsNewRecord bool              `json:"is_new_record"`
	Priority    int               `json:"priority"`
	OrderingKey string            `json:"ordering_key,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Payload     json.RawMessage   `json:"payload,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	Attempt     int               `json:"attempt"`
}

// NewEnvelope returns the envelope of e.
func NewEnvelope(e outbox.Event) Envelope {
	return Envelope{
		ID:          e.ID,
		Type:        e.Type,
		EntityID:    e.EntityID,
		UserID:      e.UserID,
		IsNewRecord: e.IsNewRecord,
		Priority:    e.Priority,
		OrderingKey: e.OrderingKey,
		Metadata:    e.Metadata,
		Payload:     e.Payload,
		CreatedAt:   e.CreatedAt.UTC(),
		Attempt:     e.Attempts,
	}
}

// Encode returns the JSON envelope of e. The payload was checked to be valid JSON when
// the event was enqueued; an error here means the stored event is corrupt, and a sink
// reports it as permanent.
func Encode(e outbox.Event) ([]byte, error) {
	b, err := json.Marshal(NewEnvelope(e))
	if err != nil {
		return nil, outbox.Permanent(fmt.Errorf("encode event %s: %w", e.ID, err))
	}
	return b, nil
}

// Template is a subject or routing key with placeholders filled from the event:
// {type}, {entity_id} and {user_id}. "outbox.{type}" sends an order.created event to
// "outbox.order.created".
type Template struct {
	raw   string
	parts []templatePart
}

type templatePart struct {
	literal string
	field   string // "type", "entity_id" or "user_id"; empty for a literal
}

// ParseTemplate parses s, rejecting unknown or unclosed placeholders.
func ParseTemplate(s string) (Template, error) {
	if s == "" {
		return Template{}, fmt.Errorf("template is empty")
	}
	t := Template{raw: s}
	rest := s
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if close := strings.IndexByte(rest, '}'); close >= 0 && (open < 0 || close < open) {
			return Template{}, fmt.Errorf("template %q: '}' without '{'", s)
		}
		if open < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return Template{}, fmt.Errorf("template %q: unclosed '{'", s)
		}
		name := rest[open+1 : open+end]
		switch name {
		case "type", "entity_id", "user_id":
		default:
			return Template{}, fmt.Errorf("template %q: unknown placeholder {%s} (want {type}, {entity_id} or {user_id})", s, name)
		}
		t.parts = append(t.parts, templatePart{field: name})
		rest = rest[open+end+1:]
	}
	return t, nil
}

// String returns the template as written.
func (t Template) String() string { return t.raw }

// Expand fills the placeholders from e, passing each value through escape first.
func (t Template) Expand(e outbox.Event, escape func(string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p.field {
		case "":
			b.WriteString(p.literal)
		case "type":
			b.WriteString(escape(e.Type))
		case "entity_id":
			b.WriteString(escape(e.EntityID))
		case "user_id":
			b.WriteString(escape(e.UserID))
		}
	}
	return b.String()
}

// Sample expands the template with every placeholder replaced by value, so that a sink
// can check the literal parts (a NATS subject's tokens, say) once, at construction.
func (t Template) Sample(value string) string {
	return t.Expand(outbox.Event{Type: value, EntityID: value, UserID: value}, func(string) string { return value })
}
