// Package pubsubsink publishes outbox events to a Google Cloud Pub/Sub topic with
// cloud.google.com/go/pubsub/v2. Each event becomes one message: the JSON envelope of
// package sink as its data, the event ID in the attribute outbox-id and the type in
// outbox-type, the event's trace metadata (traceparent, tracestate, baggage) as
// attributes of those names, and the event's ordering key as the message's ordering
// key. Message ordering is on: a subscription with ordering enabled gets a key's
// messages in the order they were published. Pub/Sub does not deduplicate on
// publish: delivery is at least once, and consumers drop repeats on outbox-id.
//
// Each message's publish result is checked (Get on each): an event counts as
// delivered only once Pub/Sub has answered with its message ID. The client stops
// publishing a key after a failed publish until ResumePublish; the outbox sends a
// key's next event only once the one before it completed, so the sink resumes the key
// before each publish.
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	a message ID in the answer                         delivered
//	Unavailable (connection refused, dropped)          outbox.Unavailable: delivery held, no attempt spent
//	Unauthenticated                                    held: outbox.ReasonCredentials
//	PermissionDenied                                   held for the topic: outbox.ReasonCredentials
//	NotFound (the topic does not exist)                held for the topic: outbox.ReasonTargetMissing
//	InvalidArgument (too large, bad attributes), or
//	  larger than the client takes (ErrOversizedMessage) permanent: given up
//	no answer within the handler timeout, other codes  retried
//
// A Publish request is accepted or refused whole. When several events of a batch are
// refused as invalid, the sink publishes each of them again alone, so that only the
// one at fault is given up.
//
// The client's own retries of a publish are turned off (the outbox retries, with its
// backoff and its breaker), so that an unreachable Pub/Sub is reported as such within
// the handler timeout.
//
// With Config.Envelope set to a CloudEvents format, messages follow the CloudEvents
// Pub/Sub binding: the structured mode's data is the event's CloudEvents JSON
// document, with the attribute Content-Type: application/cloudevents+json; the
// binary mode's data is the payload, with Content-Type: application/json and each
// other context attribute as a ce- attribute (ce-id, ce-source, ce-type, ce-subject,
// ce-time, ce-outboxattempt, …). An event one of whose attribute values is longer
// than Pub/Sub takes (1024 bytes: a long metadata, say) goes in the structured mode;
// a receiver tells the modes apart by Content-Type, as the binding says. The outbox-
// and trace attributes are set either way.
package pubsubsink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// DefaultPublishTimeout is the default of Config.PublishTimeout.
const DefaultPublishTimeout = 60 * time.Second

// The attributes every message carries.
const (
	AttributeID   = "outbox-id"   // the event ID
	AttributeType = "outbox-type" // the event type
	// AttributeContentType is, with a CloudEvents envelope, the media type of the
	// data: application/cloudevents+json (structured), application/json (binary: the
	// datacontenttype attribute).
	AttributeContentType = "Content-Type"
	// CloudEventsPrefix prefixes the attributes of a binary-mode CloudEvent's context
	// attributes: ce-id, ce-source, ce-type, …
	CloudEventsPrefix = "ce-"
	// MaxAttributeValue is the most bytes Pub/Sub takes in an attribute's value.
	MaxAttributeValue = 1024
)

// Config says where a Sink publishes.
type Config struct {
	// Project is the Google Cloud project Open makes its client for; the topic's own
	// when Topic is a topic ID. Required for Open unless Topic is a full name.
	Project string
	// Topic is the topic: its ID in Project ("orders"), or its full name
	// ("projects/my-project/topics/orders"). Required.
	Topic string
	// Endpoint, for Open, is the host:port of the Pub/Sub API when it is not Google's
	// (a regional endpoint, say). The emulator is found by PUBSUB_EMULATOR_HOST, as
	// the client library does.
	Endpoint string
	// PublishTimeout bounds one publish request, tried once. Defaults to 60s.
	PublishTimeout time.Duration
	// Envelope is what a message carries: sink.EnvelopeOutbox (the default: the JSON
	// envelope of package sink), sink.EnvelopeCloudEventsStructured (the CloudEvents
	// JSON document, attribute Content-Type: application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as data, Content-Type:
	// application/json, each other context attribute as a ce- attribute, as the
	// CloudEvents Pub/Sub binding says). An event with an attribute value over
	// Pub/Sub's 1024 bytes goes in the structured mode.
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

func (c Config) withDefaults() Config {
	c.PublishTimeout = cmp.Or(c.PublishTimeout, DefaultPublishTimeout)
	return c
}

// Validate reports the first field of c that cannot work, naming it, without calling
// Pub/Sub: the relay checks its flags with it before it starts.
func (c Config) Validate() error {
	_, err := c.withDefaults().topicName()
	return err
}

// topicName returns the topic's full name, projects/P/topics/T.
func (c Config) topicName() (string, error) {
	bad := func(field, format string, args ...any) error {
		return &outbox.FieldError{Field: "pubsubsink.Config." + field, Problem: fmt.Sprintf(format, args...)}
	}
	if c.PublishTimeout < 0 {
		return "", bad("PublishTimeout", "must not be negative, got %s", c.PublishTimeout)
	}
	if c.Project != "" && !validID(c.Project) {
		return "", bad("Project", "%q is not a project ID", c.Project)
	}
	if err := sink.CheckEnvelope("pubsubsink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return "", err
	}
	switch parts := strings.Split(c.Topic, "/"); {
	case c.Topic == "":
		return "", bad("Topic", "is required")
	case len(parts) == 4 && parts[0] == "projects" && parts[2] == "topics" && validID(parts[1]) && validID(parts[3]):
		return c.Topic, nil
	case len(parts) == 1 && validID(c.Topic):
		if c.Project == "" {
			return "", bad("Project", "is required with a topic ID (or give Topic as projects/PROJECT/topics/%s)", c.Topic)
		}
		return "projects/" + c.Project + "/topics/" + c.Topic, nil
	default:
		return "", bad("Topic", "%q is neither a topic ID nor projects/PROJECT/topics/TOPIC", c.Topic)
	}
}

// validID reports whether s may be a project or topic ID: Pub/Sub's names are letters,
// digits and - _ . ~ + % (and a project ID may hold a domain and a colon), 3 to 255
// characters, not starting with goog.
func validID(s string) bool {
	return len(s) >= 3 && len(s) <= 255 && !strings.HasPrefix(s, "goog") &&
		!strings.ContainsFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.~+%:", r))
		})
}

// Sink is an outbox.BatchHandler that publishes to one Pub/Sub topic. It is safe for
// concurrent use. Close it to stop its publisher.
type Sink struct {
	name   string // the topic's full name
	pub    *pubsub.Publisher
	client *pubsub.Client // closed by Close when Open made it
	enc    sink.Encoder
}

var _ outbox.BatchHandler = (*Sink)(nil)

// Open makes a client for cfg.Project (with Application Default Credentials, unless
// opts say otherwise, and cfg.Endpoint) and returns a Sink publishing with it; Close
// closes both. The client connects at the first publish: a relay starts even while
// Pub/Sub cannot be reached, and holds delivery.
func Open(ctx context.Context, cfg Config, opts ...option.ClientOption) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	project := cfg.Project
	if project == "" {
		project = strings.Split(cfg.Topic, "/")[1]
	}
	if cfg.Endpoint != "" {
		opts = append([]option.ClientOption{option.WithEndpoint(cfg.Endpoint)}, opts...)
	}
	client, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsubsink: %w", err)
	}
	s, err := New(client, cfg)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	s.client = client
	return s, nil
}

// New returns a Sink publishing with client, which the caller owns (makes, closes).
// It makes client's Publish calls single attempts bounded by cfg.PublishTimeout: the
// outbox retries them. A client shared with other publishers gets the same.
func New(client *pubsub.Client, cfg Config) (*Sink, error) {
	if client == nil {
		return nil, &outbox.FieldError{Field: "pubsubsink.New", Problem: "client must not be nil"}
	}
	cfg = cfg.withDefaults()
	name, err := cfg.topicName()
	if err != nil {
		return nil, err
	}
	client.TopicAdminClient.CallOptions.Publish = []gax.CallOption{
		gax.WithTimeout(cfg.PublishTimeout),
		gax.WithRetry(func() gax.Retryer { return noRetry{} }),
	}
	pub := client.Publisher(name)
	pub.EnableMessageOrdering = true
	pub.PublishSettings.Timeout = cfg.PublishTimeout
	return &Sink{name: name, pub: pub, enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}, nil
}

// noRetry is a gax.Retryer that never retries.
type noRetry struct{}

func (noRetry) Retry(error) (time.Duration, bool) { return 0, false }

// Topic returns the topic's full name.
func (s *Sink) Topic() string { return s.name }

// Close stops the publisher, waiting for the publishes in flight (up to
// Config.PublishTimeout), and closes the client when Open made it.
func (s *Sink) Close() error {
	s.pub.Stop()
	if s.client != nil {
		return s.client.Close()
	}
	return nil
}

// Handle publishes one event and waits for its result.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch publishes every event of the batch, then waits for each one's result;
// errs[i] is nil when Pub/Sub has answered with events[i]'s message ID. An error's
// text is fit for a store whatever the server answered.
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	msgs := make([]*pubsub.Message, len(events))
	results := make([]*pubsub.PublishResult, len(events))
	for i, e := range events {
		if len(e.Payload) >= pubsub.MaxPublishRequestBytes {
			// Its envelope cannot fit a publish request: given up without the cost of
			// encoding megabytes.
			errs[i] = s.classify(fmt.Errorf("payload of %d bytes: %w", len(e.Payload), pubsub.ErrOversizedMessage))
			continue
		}
		m, err := s.message(e)
		if err != nil {
			errs[i] = err
			continue
		}
		msgs[i] = m
		results[i] = s.publish(ctx, msgs[i])
	}
	var invalid []int // refused as invalid: one of them may have sunk a request of several
	for i, r := range results {
		if r == nil {
			continue
		}
		errs[i] = s.result(ctx, r)
		if status.Code(errs[i]) == codes.InvalidArgument {
			invalid = append(invalid, i)
		}
	}
	if len(invalid) > 1 {
		for _, i := range invalid {
			if ctx.Err() != nil {
				break
			}
			errs[i] = s.result(ctx, s.publish(ctx, msgs[i])) // alone in its request
		}
	}
	for i, err := range errs {
		errs[i] = outbox.CleanError(err) // a server's answer may hold anything
	}
	return errs
}

// message returns the message e is published as.
func (s *Sink) message(e outbox.Event) (*pubsub.Message, error) {
	enc, err := s.enc.Encode(e)
	if err != nil {
		return nil, err
	}
	if enc.Binary && slices.ContainsFunc(enc.Attributes, func(a sink.Attribute) bool { return len(a.Value) > MaxAttributeValue }) {
		// Pub/Sub would refuse the message; the structured mode carries it all.
		if enc, err = s.enc.Structured(e); err != nil {
			return nil, err
		}
	}
	attrs := map[string]string{AttributeID: e.ID, AttributeType: e.Type}
	for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
		if v := e.Metadata[k]; v != "" {
			attrs[k] = v
		}
	}
	if s.enc.Format() != sink.EnvelopeOutbox && enc.ContentType != "" {
		attrs[AttributeContentType] = enc.ContentType
	}
	for _, a := range enc.Attributes { // binary mode: the CloudEvents Pub/Sub binding's ce- attributes
		attrs[CloudEventsPrefix+a.Name] = a.Value
	}
	return &pubsub.Message{Data: enc.Body, Attributes: attrs, OrderingKey: e.OrderingKey}, nil
}

func (s *Sink) publish(ctx context.Context, m *pubsub.Message) *pubsub.PublishResult {
	if m.OrderingKey != "" {
		// A failed publish paused the key. The outbox sends a key's next event only
		// once this one's earlier attempt has ended, so nothing can overtake it.
		s.pub.ResumePublish(m.OrderingKey)
	}
	return s.pub.Publish(ctx, m)
}

// result waits for r and classifies its error.
func (s *Sink) result(ctx context.Context, r *pubsub.PublishResult) error {
	_, err := r.Get(ctx)
	return s.classify(err)
}

// classify marks err, the failure of one message's publish, with whose fault it is:
// the destination's (held), the message's (permanent), or none known (retried).
func (s *Sink) classify(err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("publish to %s: %w", s.name, err)
	if errors.Is(err, pubsub.ErrOversizedMessage) {
		return outbox.Permanent(wrapped) // larger than a publish request may be
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return wrapped // the handler's deadline: the message may yet be published
	}
	switch status.Code(err) {
	case codes.NotFound:
		return outbox.TargetFault(outbox.ReasonTargetMissing, s.name, wrapped)
	case codes.PermissionDenied:
		return outbox.TargetFault(outbox.ReasonCredentials, s.name, wrapped)
	case codes.Unauthenticated:
		return outbox.DestinationFault(outbox.ReasonCredentials, wrapped)
	case codes.Unavailable:
		return outbox.Unavailable(wrapped)
	case codes.InvalidArgument:
		return outbox.Permanent(wrapped)
	}
	return wrapped // paused after an earlier failure, deadline, quota, internal: retried
}
