// Package kafkasink produces outbox events to Kafka with franz-go's idempotent producer.
// Each event becomes one record: the JSON envelope of package sink as its value, the
// event's ordering key (else its entity ID) as its key, so that the events of a key land
// in one partition in order, and the event ID, type and user in headers (with the trace
// context, when the event's metadata carries traceparent / tracestate).
//
// A batch is produced at once and each record's outcome is known on its own: a record
// that fails fails its event, which the outbox retries alone, while the rest of the
// batch completes. (The producer keeps each partition gapless: when a record fails, the
// records behind it in the same partition's buffer fail with it, never the others.)
//
// # No duplicates from the producer
//
// The client must keep franz-go's defaults: idempotent writes, acks from all in-sync
// replicas, and no cancellation of records in flight (New refuses a client without
// them). The broker then drops a retried request it has already written (same producer
// ID, same sequence number), and the client fails a record to the sink only when it
// knows the broker has not written it: a record in flight is waited for, even past
// the context's deadline, rather than given up unsure. So an event the outbox retries
// was not in the topic, and an event is in the topic once. The exception is a record
// written by a relay that crashed before recording the outcome: the next relay produces
// it again under a new producer ID. Consumers deduplicate on the Outbox-Id header.
//
// # Order under retry
//
// An event with an OrderingKey is claimed only once every earlier event of its key has
// completed, so a failed event blocks its key in the outbox until its retry succeeds:
// no later event of the key is produced before it. Within the producer, up to five
// requests per broker are in flight; their sequence numbers make the broker refuse a
// request that arrives out of order, and the client retries in order, so records of a
// partition are written in the order produced. Events without an ordering key share a
// partition by entity ID but the outbox does not hold them back: a failed one may be
// overtaken by a later one.
package kafkasink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// DefaultTopic is the topic template a Sink uses unless configured otherwise.
const DefaultTopic = "outbox.{type}"

// Header names the sink sets on every record.
const (
	HeaderID          = "Outbox-Id"      // the event ID: the consumer's deduplication key
	HeaderType        = "Outbox-Type"    // the event type
	HeaderUserID      = "Outbox-User-Id" // the event's user; absent when it has none
	HeaderContentType = "Content-Type"   // sink.ContentType
)

// Trace context keys copied from the event's metadata into headers of the same name.
var traceKeys = []string{"traceparent", "tracestate"}

// maxTopicLength is Kafka's limit on a topic name.
const maxTopicLength = 249

// Config tunes a Sink.
type Config struct {
	// Topic is the topic template: {type}, {entity_id} and {user_id} are replaced by the
	// event's values, with characters a topic name cannot hold (anything but letters,
	// digits, '.', '_' and '-') turned into '_'. Defaults to DefaultTopic.
	Topic string
}

func (c Config) withDefaults() Config {
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	return c
}

// Validate reports the first field of c (after defaults) that cannot work.
func (c Config) Validate() error {
	_, err := c.withDefaults().template()
	return err
}

func (c Config) template() (sink.Template, error) {
	tmpl, err := sink.ParseTemplate(c.Topic)
	if err != nil {
		return tmpl, &outbox.FieldError{Field: "kafkasink.Config.Topic", Problem: err.Error()}
	}
	if err := CheckTopic(tmpl.Sample("x")); err != nil {
		return tmpl, &outbox.FieldError{Field: "kafkasink.Config.Topic", Problem: fmt.Sprintf("template %q: %v", c.Topic, err)}
	}
	return tmpl, nil
}

// CheckTopic reports why s cannot name a topic, if it cannot.
func CheckTopic(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return fmt.Errorf("topic %q is not a valid name", s)
	case len(s) > maxTopicLength:
		return fmt.Errorf("topic %q is %d bytes, over Kafka's limit of %d", s, len(s), maxTopicLength)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return !topicRune(r) }); i >= 0 {
		return fmt.Errorf("topic %q contains %q (want letters, digits, '.', '_' or '-')", s, s[i])
	}
	return nil
}

func topicRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// escape makes v usable inside a topic name.
func escape(v string) string {
	if v == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if topicRune(r) {
			return r
		}
		return '_'
	}, v)
}

// Sink is an outbox.BatchHandler producing to Kafka. It is safe for concurrent use.
type Sink struct {
	client *kgo.Client
	topic  sink.Template
}

var _ outbox.BatchHandler = (*Sink)(nil)

// New returns a Sink producing through client, which the caller owns (creates with the
// bootstrap brokers, TLS and SASL it needs, closes). It fails when cfg holds a value that
// cannot work, or when client was built with an option that would allow duplicates
// or lost records: DisableIdempotentWrite, AllowIdempotentProduceCancellation, or
// RequiredAcks other than AllISRAcks.
func New(client *kgo.Client, cfg Config) (*Sink, error) {
	if client == nil {
		return nil, &outbox.FieldError{Field: "kafkasink.New", Problem: "client must not be nil"}
	}
	cfg = cfg.withDefaults()
	tmpl, err := cfg.template()
	if err != nil {
		return nil, err
	}
	if err := checkClient(client); err != nil {
		return nil, err
	}
	return &Sink{client: client, topic: tmpl}, nil
}

func checkClient(cl *kgo.Client) error {
	if v, _ := cl.OptValue(kgo.DisableIdempotentWrite).(bool); v {
		return &outbox.FieldError{Field: "kafkasink.New", Problem: "client must not DisableIdempotentWrite: retried requests would duplicate records"}
	}
	if v, _ := cl.OptValue(kgo.AllowIdempotentProduceCancellation).(bool); v {
		return &outbox.FieldError{Field: "kafkasink.New", Problem: "client must not AllowIdempotentProduceCancellation: a record failed in flight may have been written"}
	}
	if acks, ok := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); ok && acks != kgo.AllISRAcks() {
		return &outbox.FieldError{Field: "kafkasink.New", Problem: "client must use RequiredAcks(AllISRAcks()): a record acknowledged by fewer replicas can be lost"}
	}
	return nil
}

// Topic returns the topic e is produced to.
func (s *Sink) Topic(e outbox.Event) string { return s.topic.Expand(e, escape) }

// Record returns the record e is produced as.
func (s *Sink) Record(e outbox.Event) (*kgo.Record, error) {
	value, err := sink.Encode(e)
	if err != nil {
		return nil, err
	}
	r := &kgo.Record{
		Topic: s.Topic(e),
		Key:   []byte(cmp.Or(e.OrderingKey, e.EntityID)),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte(e.ID)},
			{Key: HeaderType, Value: []byte(e.Type)},
			{Key: HeaderContentType, Value: []byte(sink.ContentType)},
		},
	}
	if e.UserID != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderUserID, Value: []byte(e.UserID)})
	}
	for _, k := range traceKeys {
		if v, ok := e.Metadata[k]; ok && v != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	return r, nil
}

// Handle produces one event and waits for the brokers' acknowledgement.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch produces every event of the batch at once and waits for all of them;
// errs[i] is nil when the partition's in-sync replicas have written events[i].
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	records := make([]*kgo.Record, 0, len(events))
	// ProduceSync reports in the order records complete, not the order given.
	index := make(map[*kgo.Record]int, len(events))
	for i, e := range events {
		r, err := s.Record(e)
		if err != nil {
			errs[i] = err
			continue
		}
		records = append(records, r)
		index[r] = i
	}
	if len(records) == 0 {
		return errs
	}
	for _, res := range s.client.ProduceSync(ctx, records...) {
		if res.Err != nil {
			errs[index[res.Record]] = classify(fmt.Errorf("produce to %s: %w", res.Record.Topic, res.Err))
		}
	}
	return errs
}

// permanentErrs are the broker and client errors a retry of the same record cannot
// cure: it is too large, its topic is missing or malformed, or the client may not
// write to it.
var permanentErrs = []error{
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidRecord,
	kerr.InvalidTopicException,
	kerr.UnknownTopicOrPartition, // only after the client's own retries: the topic does not exist
	kerr.UnknownTopicID,
	kerr.TopicAuthorizationFailed,
	kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed,
	kerr.UnsupportedForMessageFormat,
}

// classify marks err permanent when it is one of permanentErrs. Everything else (a
// broker down, leadership moving, not enough replicas, the context ending) is retried.
func classify(err error) error {
	for _, p := range permanentErrs {
		if errors.Is(err, p) {
			return outbox.Permanent(err)
		}
	}
	return err
}
