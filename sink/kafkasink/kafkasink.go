// Package kafkasink produces outbox events to Kafka with franz-go's idempotent producer.
// Each event becomes one record: the JSON envelope of package sink as its value, the
// event's ordering key (else its entity ID) as its key, so that the events of a key
// that go to one topic land in one of its partitions, in order, and the event ID, type
// and user in headers (with the trace context, when the event's metadata carries
// traceparent / tracestate / baggage). Order holds within a topic only: with the
// default topic "outbox.{type}" a key's create and its updates go to different topics,
// and a consumer of both sees no order between them. A topic that does not depend on
// the type ("outbox.events") keeps all of a key's events in one partition, in order.
//
// A batch is produced at once and each record's outcome is known on its own: a record
// that fails fails its event, which the outbox retries alone, while the rest of the
// batch completes. (The producer keeps each partition gapless: when a record fails, the
// records behind it in the same partition's buffer fail with it, never the others.)
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	the partition's in-sync replicas wrote the record  delivered
//	no broker answers (refused, down, blackholed:
//	  a produce without an answer, then no answer to
//	  a metadata request within Config.ProbeTimeout)     outbox.Unavailable: delivery held, no attempt spent
//	SASL authentication failed, not authorized on
//	  the cluster                                      held: outbox.ReasonCredentials
//	TLS handshake failed                               held: "TLS handshake failed"
//	topic does not exist (checked before producing),
//	  or deleted (and perhaps recreated)               held, for that topic only: outbox.ReasonTargetMissing
//	not authorized for the topic                       held, for that topic only: outbox.ReasonCredentials
//	invalid topic                                      held, for that topic only: "invalid topic"
//	record too large, invalid record                   permanent: given up
//	other broker errors, no acknowledgement before
//	  the deadline while a broker answers              retried
//
// A topic the sink has not produced to is looked up first (one metadata request for
// the batch's new topics), so that events bound for a missing topic fail at once
// instead of waiting out the client's unknown-topic retries, which would hold the
// whole batch. A topic that was deleted and recreated keeps failing in franz-go until
// the client forgets it: the sink purges it from the client on UNKNOWN_TOPIC_ID (and
// UNKNOWN_TOPIC_OR_PARTITION), so the next produce learns the new topic.
//
// # No duplicates from the producer
//
// The client must keep franz-go's defaults: idempotent writes, acks from all in-sync
// replicas, and no cancellation of records in flight (New refuses a client without
// them). The broker then drops a retried request it has already written (same producer
// ID, same sequence number), and the client fails a record to the sink only when it
// knows the broker has not written it. A record that was sent and not yet answered when
// the handler's context ends stays with the client, which keeps retrying it; the sink
// stops waiting, reports the event failed (unavailable when no broker answers), and
// remembers the record: when the outbox delivers the event again, the sink waits for
// that record's outcome instead of producing a second one, and reports the event
// delivered once it is acknowledged. So an event the outbox retries was not in the
// topic, and an event is in the topic once. The exceptions are a record written by a
// relay that crashed or stopped before the outcome was known: the next relay produces
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
//
// # Consumers
//
// The receiving side is package inbox/kafkainbox: a consumer group loop that commits a
// record's offset only after the application's effect succeeded, and reads the headers
// named here (HeaderID is its deduplication key).
//
// # CloudEvents
//
// With Config.Envelope set to a CloudEvents format, records follow the CloudEvents
// Kafka binding: the structured mode's value is the event's CloudEvents JSON
// document, with the header content-type: application/cloudevents+json; the binary
// mode's value is the payload (empty, not null, when there is none: a null value is
// a tombstone in a compacted topic), with content-type: application/json and each
// other context attribute as a ce_ header (ce_id, ce_source, ce_type, ce_subject,
// ce_time, ce_outboxattempt, …). The key and the Outbox- headers stay as they are.
package kafkasink

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// Defaults of Config.
const (
	DefaultTopic        = "outbox.{type}"
	DefaultProbeTimeout = 2 * time.Second
)

// Header names the sink sets on every record.
const (
	HeaderID          = "Outbox-Id"      // the event ID: the consumer's deduplication key
	HeaderType        = "Outbox-Type"    // the event type
	HeaderUserID      = "Outbox-User-Id" // the event's user; absent when it has none
	HeaderContentType = "Content-Type"   // sink.ContentType; with a CloudEvents envelope, HeaderCloudEventsContentType instead
	// HeaderCloudEventsContentType is the CloudEvents Kafka binding's content type
	// header: application/cloudevents+json in the structured mode, the payload's
	// application/json (the datacontenttype attribute) in the binary mode.
	HeaderCloudEventsContentType = "content-type"
	// CloudEventsPrefix prefixes the headers of a binary-mode CloudEvent's attributes:
	// ce_id, ce_source, ce_type, …
	CloudEventsPrefix = "ce_"
)

// Reasons of the destination faults the sink reports beside the outbox.Reason… ones.
const (
	ReasonTLS          = "TLS handshake failed"
	ReasonInvalidTopic = "invalid topic"
)

// maxTopicLength is Kafka's limit on a topic name.
const maxTopicLength = 249

// Config tunes a Sink.
type Config struct {
	// Topic is the topic template: {type}, {entity_id} and {user_id} are replaced by the
	// event's values, with characters a topic name cannot hold (anything but letters,
	// digits, '.', '_' and '-') turned into '_'. Defaults to DefaultTopic. A key's
	// events keep their order only within one topic: a template without {type} keeps
	// a key's create and updates in order for the consumer.
	Topic string
	// ProbeTimeout bounds the metadata request the sink sends to any broker after a
	// produce got no answer (the deadline passed, the connection failed): no answer
	// within it and the events are reported unavailable, an answer and they are
	// retried (or held for their topic, when the answer says it is gone). Defaults to
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Envelope is what a record carries: sink.EnvelopeOutbox (the default: the JSON
	// envelope of package sink), sink.EnvelopeCloudEventsStructured (the CloudEvents
	// JSON document, header content-type: application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as the value, header content-type:
	// application/json, each other context attribute as a ce_ header, as the
	// CloudEvents Kafka binding says).
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

func (c Config) withDefaults() Config {
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	c.ProbeTimeout = cmp.Or(c.ProbeTimeout, DefaultProbeTimeout)
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
	if c.ProbeTimeout < 0 {
		return tmpl, &outbox.FieldError{Field: "kafkasink.Config.ProbeTimeout", Problem: fmt.Sprintf("must not be negative, got %s", c.ProbeTimeout)}
	}
	if err := sink.CheckEnvelope("kafkasink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return tmpl, err
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
	client       *kgo.Client
	topic        sink.Template
	probeTimeout time.Duration
	autoCreate   bool // the client asks brokers to create missing topics
	enc          sink.Encoder

	mu sync.Mutex
	// known holds the topics the cluster said exist (or took a record for).
	known map[string]bool
	// flights holds, by event ID, the records produced whose outcome a HandleBatch
	// has not taken yet: in flight, or settled after their HandleBatch stopped waiting.
	flights map[string]*flight
	swept   time.Time
}

// flight is one record produced for an event.
type flight struct {
	id     string
	record *kgo.Record
	done   chan struct{} // closed once err is set; shared by the records of one produce
	err    error
	// settled is when the outcome came; zero while in flight.
	settled time.Time
}

// flightKeep is how long a record's outcome is kept for the event's next delivery
// after the HandleBatch that produced it stopped waiting.
const flightKeep = time.Hour

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
	autoCreate, _ := client.OptValue(kgo.AllowAutoTopicCreation).(bool)
	return &Sink{
		client: client, topic: tmpl, probeTimeout: cfg.ProbeTimeout, autoCreate: autoCreate,
		known: map[string]bool{}, flights: map[string]*flight{},
		enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource),
	}, nil
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
	msg, err := s.enc.Encode(e)
	if err != nil {
		return nil, err
	}
	r := &kgo.Record{
		Topic: s.Topic(e),
		Key:   []byte(cmp.Or(e.OrderingKey, e.EntityID)),
		Value: msg.Body,
		Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte(e.ID)},
			{Key: HeaderType, Value: []byte(e.Type)},
		},
	}
	switch {
	case s.enc.Format() == sink.EnvelopeOutbox:
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderContentType, Value: []byte(msg.ContentType)})
	case msg.ContentType != "":
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderCloudEventsContentType, Value: []byte(msg.ContentType)})
	}
	for _, a := range msg.Attributes { // binary mode: the CloudEvents Kafka binding's ce_ headers
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: CloudEventsPrefix + a.Name, Value: []byte(a.Value)})
	}
	if msg.Binary && r.Value == nil {
		// No data: an empty value, not a null one, which a compacted topic would
		// take for a tombstone of the key.
		r.Value = []byte{}
	}
	if e.UserID != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderUserID, Value: []byte(e.UserID)})
	}
	for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
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

// HandleBatch produces every event of the batch at once and waits for all of them, at
// most until ctx ends; errs[i] is nil when the partition's in-sync replicas have
// written events[i]. An event whose record is still in flight from an earlier call
// is not produced again: its record's outcome is awaited instead.
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	waits := make([]*flight, len(events)) // the record each event's outcome comes from
	var fresh []int                       // the events to produce a record for
	topics := map[string]bool{}           // their topics that the sink does not know yet

	s.mu.Lock()
	s.sweepLocked(time.Now())
	for i, e := range events {
		if f := s.flights[e.ID]; f != nil {
			waits[i] = f // in flight, or written after its HandleBatch stopped waiting
			continue
		}
		r, err := s.Record(e)
		if err != nil {
			errs[i] = err
			continue
		}
		waits[i] = &flight{id: e.ID, record: r}
		fresh = append(fresh, i)
		if !s.known[r.Topic] {
			topics[r.Topic] = true
		}
	}
	s.mu.Unlock()

	// Look the new topics up before producing: a record for a missing topic would
	// wait out the client's unknown-topic retries, and the whole batch with it.
	missing, batchErr := s.lookUp(ctx, topics)

	var records []*kgo.Record
	byRecord := make(map[*kgo.Record]*flight, len(fresh))
	done := make(chan struct{})
	s.mu.Lock()
	for _, i := range fresh {
		f := waits[i]
		if err := cmp.Or(batchErr, missing[f.record.Topic]); err != nil {
			errs[i], waits[i] = err, nil
			continue
		}
		if other := s.flights[f.id]; other != nil {
			waits[i] = other // a concurrent call produced the event meanwhile
			continue
		}
		f.done = done
		s.flights[f.id] = f
		byRecord[f.record] = f
		records = append(records, f.record)
	}
	s.mu.Unlock()
	if len(records) > 0 {
		go s.produce(ctx, records, byRecord, done)
	}

	// Wait for every outcome, until ctx ends.
	for _, f := range waits {
		if f == nil {
			continue
		}
		select {
		case <-f.done:
		case <-ctx.Done():
		}
	}

	probe := map[string]bool{} // the topics of the records no broker answered for
	s.mu.Lock()
	for i, f := range waits {
		switch {
		case f == nil:
			continue
		case f.settled.IsZero():
			errs[i] = &inFlightError{topic: f.record.Topic, err: context.Cause(ctx)}
			probe[f.record.Topic] = true
			continue
		case s.flights[f.id] == f:
			delete(s.flights, f.id) // its outcome is taken
		}
		if f.err != nil {
			errs[i] = classify(f.record.Topic, fmt.Errorf("produce to %s: %w", f.record.Topic, f.err))
			if needsProbe(errs[i]) {
				probe[f.record.Topic] = true
			}
		}
	}
	s.mu.Unlock()
	if len(probe) > 0 && !errors.Is(ctx.Err(), context.Canceled) {
		gone, perr := s.probe(ctx, probe)
		for i, err := range errs {
			switch {
			case !needsProbe(err):
			case perr != nil:
				errs[i] = unreachable(err, perr)
			case waits[i] != nil && gone[waits[i].record.Topic] != nil:
				// Deleted while its record was in flight: the client retries an
				// unknown topic for a long time (about 20s by default) before it
				// fails the record.
				topic := waits[i].record.Topic
				errs[i] = classify(topic, fmt.Errorf("%w; looked up: %w", err, gone[topic]))
			}
		}
	}
	return errs
}

// produce produces records and settles their flights with the outcomes. It returns
// only once every record's outcome is known, which, for a record sent and not yet
// answered, may be long after ctx ended.
func (s *Sink) produce(ctx context.Context, records []*kgo.Record, byRecord map[*kgo.Record]*flight, done chan struct{}) {
	results := s.client.ProduceSync(ctx, records...)
	var purge []string
	now := time.Now()
	s.mu.Lock()
	for _, res := range results {
		f := byRecord[res.Record]
		f.err, f.settled = res.Err, now
		switch {
		case res.Err == nil:
			s.known[res.Record.Topic] = true
			continue // kept until a HandleBatch takes it
		case errors.Is(res.Err, kerr.UnknownTopicOrPartition), errors.Is(res.Err, kerr.UnknownTopicID):
			// Deleted, perhaps recreated: the client would go on using the old
			// topic (and refuse a new one's ID). Forget the topic, so that the
			// next produce looks it up afresh.
			delete(s.known, res.Record.Topic)
			purge = append(purge, res.Record.Topic)
		}
		if s.flights[f.id] == f {
			// An unwritten record has nothing to tell the event's next delivery;
			// a HandleBatch waiting for it holds it still.
			delete(s.flights, f.id)
		}
	}
	s.mu.Unlock()
	if len(purge) > 0 {
		// Before the waiting HandleBatch returns: a purge fails the topic's records
		// buffered by then, and the event's next delivery must not be among them.
		s.client.PurgeTopicsFromProducing(dedup(purge)...)
	}
	close(done)
}

func dedup(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// sweepLocked drops, at most once a minute, the outcomes kept for events whose next
// delivery has not come within flightKeep.
func (s *Sink) sweepLocked(now time.Time) {
	if now.Sub(s.swept) < time.Minute {
		return
	}
	s.swept = now
	for id, f := range s.flights {
		if !f.settled.IsZero() && (f.err != nil || now.Sub(f.settled) > flightKeep) {
			delete(s.flights, id)
		}
	}
}

// lookUp asks the cluster about topics. It returns the error, classified, of each
// topic that cannot take records (it does not exist, the client may not write to
// it); or, when the request fails and no broker answers a probe either, the error of
// the whole batch (the cluster is unreachable, or refuses the credentials). A request
// that fails while a broker answers returns nothing: the produce meets the fault and
// says so.
func (s *Sink) lookUp(ctx context.Context, topics map[string]bool) (missing map[string]error, batchErr error) {
	if len(topics) == 0 {
		return nil, nil
	}
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = s.autoCreate
	for t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.client)
	if err != nil {
		err = fmt.Errorf("look up topics: %w", err)
		if c := classify("", err); isDestinationFault(c) {
			return nil, c
		}
		if ctx.Err() == nil {
			if _, perr := s.probe(ctx, nil); perr != nil {
				return nil, unreachable(err, perr)
			}
		}
		return nil, nil
	}
	missing = map[string]error{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range resp.Topics {
		if t.Topic == nil || !topics[*t.Topic] {
			continue
		}
		topic := *t.Topic
		err := kerr.ErrorForCode(t.ErrorCode)
		if err == nil {
			s.known[topic] = true
			continue
		}
		if c := classify(topic, fmt.Errorf("produce to %s: looked up before producing: %w", topic, err)); isDestinationFault(c) {
			missing[topic] = c
		}
		// Other errors (no leader yet, say) are the produce's to retry.
	}
	return missing, nil
}

// probe asks any broker for the metadata of topics (or pings it, when there are
// none), within the probe timeout: an error means no broker answered. gone holds the
// broker's error for each topic the sink cannot produce to (it does not exist, the
// client may not write to it).
func (s *Sink) probe(ctx context.Context, topics map[string]bool) (gone map[string]error, err error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.probeTimeout)
	defer cancel()
	if len(topics) == 0 {
		return nil, s.client.Ping(pctx)
	}
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = s.autoCreate
	for t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(pctx, s.client)
	if err != nil {
		return nil, err
	}
	gone = map[string]error{}
	for _, t := range resp.Topics {
		if t.Topic == nil || !topics[*t.Topic] {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && isDestinationFault(classify(*t.Topic, err)) {
			gone[*t.Topic] = err
		}
	}
	return gone, nil
}

// inFlightError is the failure of a record still unanswered when the handler's
// context ended. The client keeps it; the event's next delivery takes its outcome.
type inFlightError struct {
	topic string
	err   error
}

func (e *inFlightError) Error() string {
	return fmt.Sprintf("produce to %s: no answer before the handler's deadline (%v); the event's next delivery takes this record's outcome rather than producing it again", e.topic, e.err)
}

func (e *inFlightError) Unwrap() error { return e.err }

// permanentErrs are the broker and client errors a retry of the same record cannot
// cure: it is too large or malformed.
var permanentErrs = []error{
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidRecord,
	kerr.CorruptMessage,
	kerr.UnsupportedForMessageFormat,
}

// credentialErrs mean the client's credentials are refused, or do not allow what it
// does, on the whole cluster.
var credentialErrs = []error{
	kerr.SaslAuthenticationFailed,
	kerr.UnsupportedSaslMechanism,
	kerr.IllegalSaslState,
	kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed,
}

// classify marks err by what it says about the event, its topic or the cluster:
// permanent when the record is at fault; a destination fault of the topic or of the
// cluster when every event bound there would meet it. Everything else (leadership
// moving, not enough replicas, a connection lost, the context ending) is retried; a
// failure that is not a broker's answer is then checked with a probe (needsProbe).
func classify(topic string, err error) error {
	for _, p := range permanentErrs {
		if errors.Is(err, p) {
			return outbox.Permanent(err)
		}
	}
	for _, c := range credentialErrs {
		if errors.Is(err, c) {
			return outbox.DestinationFault(outbox.ReasonCredentials, err)
		}
	}
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return outbox.TargetFault(outbox.ReasonTargetMissing, topic, err)
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return outbox.TargetFault(outbox.ReasonCredentials, topic, err)
	case errors.Is(err, kerr.InvalidTopicException):
		return outbox.TargetFault(ReasonInvalidTopic, topic, err)
	}
	if isTLSErr(err) {
		return outbox.DestinationFault(ReasonTLS, err)
	}
	return err
}

// needsProbe reports whether a classified failure is not an answer from a broker (the
// context ended, the connection failed, the record timed out in the client), so that
// whether any broker answers at all decides what it means.
func needsProbe(err error) bool {
	if err == nil || outbox.IsPermanent(err) || isDestinationFault(err) {
		return false
	}
	var ke *kerr.Error
	return !errors.As(err, &ke) && !errors.Is(err, kgo.ErrClientClosed)
}

func isDestinationFault(err error) bool {
	var de *outbox.DestinationError
	return errors.As(err, &de)
}

// unreachable marks err, a produce that got no answer, with what the probe that no
// broker answered says: credentials or TLS refused, else the cluster unreachable.
func unreachable(err, probeErr error) error {
	err = fmt.Errorf("%w; no broker answers: %w", err, probeErr)
	if c := classify("", probeErr); isDestinationFault(c) {
		var de *outbox.DestinationError
		errors.As(c, &de)
		return outbox.DestinationFault(de.Reason, err)
	}
	return outbox.Unavailable(err)
}

func isTLSErr(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
