// Package sqssink sends outbox events to Amazon SQS queues and Amazon SNS topics with
// the AWS SDK for Go v2. Each event becomes one message: the JSON envelope of package
// sink as its body, with the event ID in the message attribute Outbox-Id and the type in
// Outbox-Type; the event's trace metadata (traceparent, tracestate, baggage) goes as
// attributes of those names.
//
// A queue or topic whose name ends in .fifo is FIFO: each message gets the event's
// ordering key as its message group (the entity ID when the event has none), so the
// queue keeps per-key order, and the event ID as its deduplication ID, so an event
// delivered twice within SQS's five-minute deduplication interval is stored once. A
// standard queue or topic gets neither: delivery is at least once, and consumers drop
// repeats on Outbox-Id.
//
// A batch goes out as SendMessageBatch (PublishBatch for a topic) calls of up to 10
// messages and Config.MaxBatchBytes; one event alone goes by SendMessage (Publish).
// Each message's outcome is its own: an entry the service failed as the sender's fault
// is given up, any other failed entry is retried. A whole call refused for one
// message's content (too large, invalid characters) is sent again one message at a
// time, so that only the message at fault is given up.
//
// What each outcome means for the event (see outbox.DestinationError):
//
//	in the answer's Successful entries                   delivered
//	connection refused, name not resolved, no route      outbox.Unavailable: delivery held, no attempt spent
//	credentials rejected or missing (InvalidClientTokenId,
//	  SignatureDoesNotMatch, ExpiredToken, an HTTP 401/403,
//	  no credentials in the SDK's chain)                 held: outbox.ReasonCredentials
//	not authorized for the queue or topic (AccessDenied,
//	  AuthorizationError), its KMS key unusable          held for the queue or topic: outbox.ReasonCredentials / "encryption key unusable"
//	queue or topic missing (QueueDoesNotExist, NotFound) held for the queue or topic: outbox.ReasonTargetMissing
//	the message itself refused (too large, invalid
//	  parameter or contents; a failed entry with
//	  SenderFault)                                       permanent: given up
//	throttled, a server error, no answer in time, a
//	  connection cut after the request                   retried
//
// The SDK's own retries are turned off (the outbox retries, with its backoff and its
// breaker), so that a refused connection is reported as such within the handler
// timeout rather than as a timeout after the SDK's backoff.
//
// # CloudEvents
//
// With Config.Envelope set to a CloudEvents format (SQS and SNS have no CloudEvents
// binding; this follows the Pub/Sub one), the structured mode's body is the event's
// CloudEvents JSON document, with the attribute Content-Type:
// application/cloudevents+json beside Outbox-Id, Outbox-Type and the trace. The
// binary mode's body is the payload, with Content-Type: application/json and each
// other context attribute as a ce- attribute (ce-specversion, ce-id, ce-source,
// ce-type, ce-subject, ce-time, ce-outboxattempt, …) and nothing else, since a
// message takes ten attributes at most; an event with more (a user, an ordering key,
// a priority, metadata, a trace: see package sink's extensions), or without a
// payload, goes in the structured mode. A receiver tells the modes apart by
// Content-Type.
package sqssink

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// The defaults and limits of Config.
const (
	// DefaultMaxBatchBytes is the default of Config.MaxBatchBytes: 256 KiB, the most one
	// PublishBatch takes (SQS takes up to 1 MiB).
	DefaultMaxBatchBytes = 256 << 10
	// MaxBatchEntries is the most messages one SendMessageBatch or PublishBatch takes.
	MaxBatchEntries = 10
)

// The message attributes every message carries.
const (
	AttributeID   = "Outbox-Id"   // the event ID
	AttributeType = "Outbox-Type" // the event type
	// AttributeContentType is, with a CloudEvents envelope, the media type of the body:
	// application/cloudevents+json (structured), application/json (binary: the
	// datacontenttype attribute).
	AttributeContentType = "Content-Type"
	// CloudEventsPrefix prefixes the attributes of a binary-mode CloudEvent's context
	// attributes: ce-id, ce-source, ce-type, …
	CloudEventsPrefix = "ce-"
	// MaxAttributes is the most message attributes SQS takes on a message.
	MaxAttributes = 10
)

// Config says where a Sink sends. Exactly one of QueueURL and TopicARN is required.
type Config struct {
	// QueueURL is the SQS queue to send to, as SQS names it:
	// https://sqs.eu-west-1.amazonaws.com/123456789012/orders. A name ending in .fifo
	// is a FIFO queue.
	QueueURL string
	// TopicARN is the SNS topic to publish to: arn:aws:sns:eu-west-1:123456789012:orders.
	// A name ending in .fifo is a FIFO topic.
	TopicARN string
	// Region is the AWS region of the API. Defaults to the region in the topic ARN or the
	// queue URL's host (sqs.REGION.amazonaws.com), else the aws.Config's region (from
	// AWS_REGION or the shared config file).
	Region string
	// Endpoint is the base URL of the API when it is not AWS's own for the region: a VPC
	// endpoint, or an SQS/SNS-compatible server (http://127.0.0.1:4566). Defaults to
	// AWS's (or AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL_SNS, read by the SDK).
	Endpoint string
	// MaxBatchBytes bounds the bodies and attributes of one SendMessageBatch or
	// PublishBatch call; a message larger than that goes alone. Defaults to 262144
	// (256 KiB).
	MaxBatchBytes int
	// Envelope is what a message carries: sink.EnvelopeOutbox (the default: the JSON
	// envelope of package sink), sink.EnvelopeCloudEventsStructured (the CloudEvents
	// JSON document, attribute Content-Type: application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as the body, Content-Type:
	// application/json, each other context attribute as a ce- attribute). SQS and SNS
	// have no CloudEvents binding; this follows the Pub/Sub one. A message takes 10
	// attributes at most: an event with more (a user, an ordering key, metadata, …),
	// or without a payload (a body cannot be empty), goes in the structured mode.
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

func (c Config) withDefaults() Config {
	c.MaxBatchBytes = cmp.Or(c.MaxBatchBytes, DefaultMaxBatchBytes)
	return c
}

// Validate reports the first field of c that cannot work, naming it, without calling
// AWS: the relay checks its flags with it before it starts.
func (c Config) Validate() error {
	_, err := c.withDefaults().target()
	return err
}

// target checks c and says what it points at.
func (c Config) target() (target, error) {
	bad := func(field, format string, args ...any) error {
		return &outbox.FieldError{Field: "sqssink.Config." + field, Problem: fmt.Sprintf(format, args...)}
	}
	var t target
	switch {
	case c.QueueURL == "" && c.TopicARN == "":
		return t, bad("QueueURL", "or TopicARN is required")
	case c.QueueURL != "" && c.TopicARN != "":
		return t, bad("TopicARN", "must be empty when QueueURL is set (one sink sends to one queue or topic)")
	case c.QueueURL != "":
		u, err := url.Parse(c.QueueURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return t, bad("QueueURL", "%q is not a queue URL (want https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)", c.QueueURL)
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return t, bad("QueueURL", "%q: want the path /ACCOUNT/NAME", c.QueueURL)
		}
		t = target{name: c.QueueURL, short: parts[1], queue: true, fifo: strings.HasSuffix(parts[1], ".fifo"), region: hostRegion(u.Hostname())}
	default:
		a, err := arn.Parse(c.TopicARN)
		if err != nil || a.Service != "sns" || a.Resource == "" || strings.ContainsAny(a.Resource, ":/") {
			return t, bad("TopicARN", "%q is not a topic ARN (want arn:aws:sns:REGION:ACCOUNT:NAME)", c.TopicARN)
		}
		t = target{name: c.TopicARN, short: a.Resource, fifo: strings.HasSuffix(a.Resource, ".fifo"), region: a.Region}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return t, bad("Endpoint", "%q is not an http(s) URL", c.Endpoint)
		}
	}
	if c.MaxBatchBytes < 0 {
		return t, bad("MaxBatchBytes", "must not be negative, got %d", c.MaxBatchBytes)
	}
	if err := sink.CheckEnvelope("sqssink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return t, err
	}
	return t, nil
}

// hostRegion returns the region of an SQS host name (sqs.eu-west-1.amazonaws.com, or
// the legacy eu-west-1.queue.amazonaws.com), or "".
func hostRegion(host string) string {
	if rest, ok := strings.CutPrefix(host, "sqs."); ok {
		if region, _, ok := strings.Cut(rest, ".amazonaws.com"); ok && !strings.Contains(region, ".") {
			return region
		}
	}
	if region, _, ok := strings.Cut(host, ".queue.amazonaws.com"); ok && !strings.Contains(region, ".") {
		return region
	}
	return ""
}

// target is what a Sink sends to.
type target struct {
	name   string // the queue URL or topic ARN, as errors and holds name it
	short  string // the queue or topic name
	queue  bool   // an SQS queue; else an SNS topic
	fifo   bool
	region string // from the URL or ARN; "" when it does not say
}

// Sink is an outbox.BatchHandler that sends to one SQS queue or SNS topic. It is safe
// for concurrent use.
type Sink struct {
	cfg Config
	t   target
	sqs *sqs.Client
	sns *sns.Client
	enc sink.Encoder
}

var _ outbox.BatchHandler = (*Sink)(nil)

// Open loads the AWS configuration by the SDK's usual chain (environment, shared
// config and credentials files, SSO, web identity, ECS and EC2 roles; optFns add to
// it) and returns a Sink with it. Credentials are resolved at the first delivery, not
// here: a relay starts even while they cannot be had, and holds delivery.
func Open(ctx context.Context, cfg Config, optFns ...func(*config.LoadOptions) error) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, optFns...)
	if err != nil {
		return nil, fmt.Errorf("sqssink: load AWS configuration: %w", err)
	}
	return New(awsCfg, cfg)
}

// New returns a Sink calling AWS with awsCfg (its credentials, HTTP client and
// region), overridden by cfg's Region and Endpoint. It fails when cfg holds a value
// that cannot work or no region is known.
func New(awsCfg aws.Config, cfg Config) (*Sink, error) {
	cfg = cfg.withDefaults()
	t, err := cfg.target()
	if err != nil {
		return nil, err
	}
	awsCfg = awsCfg.Copy()
	awsCfg.Region = cmp.Or(cfg.Region, t.region, awsCfg.Region)
	if awsCfg.Region == "" {
		return nil, &outbox.FieldError{Field: "sqssink.Config.Region", Problem: "is not set and cannot be told from " + t.name + " (set it, or AWS_REGION)"}
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = markCredentials{awsCfg.Credentials}
	}
	s := &Sink{cfg: cfg, t: t, enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}
	if t.queue {
		s.sqs = sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
			if cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.Endpoint)
			}
			o.RetryMaxAttempts = 1 // the outbox retries
		})
	} else {
		s.sns = sns.NewFromConfig(awsCfg, func(o *sns.Options) {
			if cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.Endpoint)
			}
			o.RetryMaxAttempts = 1
		})
	}
	return s, nil
}

// Target returns the queue URL or topic ARN the sink sends to.
func (s *Sink) Target() string { return s.t.name }

// FIFO reports whether the queue or topic is FIFO (its name ends in .fifo).
func (s *Sink) FIFO() bool { return s.t.fifo }

// message is one event as it goes out.
type message struct {
	i     int // the event's index in the batch
	body  string
	attrs map[string]string
	group string // FIFO only: the message group ID
	dedup string // FIFO only: the deduplication ID
	size  int    // as SQS and SNS count it: body, attribute names, types and values
}

// MessageGroup returns the message group of e on a FIFO queue or topic: its ordering
// key, else its entity ID. A value SQS would refuse as a group ID (over 128
// characters, or characters other than printable ASCII) is replaced by its SHA-256,
// so that the events of one key still share a group.
func MessageGroup(e outbox.Event) string {
	key := cmp.Or(e.OrderingKey, e.EntityID)
	if len(key) <= 128 && key != "" && !strings.ContainsFunc(key, func(r rune) bool { return r < '!' || r > '~' }) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256-" + hex.EncodeToString(sum[:])
}

func (s *Sink) message(i int, e outbox.Event) (*message, error) {
	enc, err := s.enc.Encode(e)
	if err != nil {
		return nil, err
	}
	// Binary mode: the attributes (and the content type) must fit SQS's ten, and the
	// body must not be empty; else the structured mode carries the event.
	if enc.Binary && (len(enc.Attributes)+1 > MaxAttributes || len(enc.Body) == 0) {
		if enc, err = s.enc.Structured(e); err != nil {
			return nil, err
		}
	}
	m := &message{i: i, body: escapeNoncharacters(string(enc.Body)), attrs: map[string]string{}}
	if enc.Binary {
		// ce-id and ce-type stand for Outbox-Id and Outbox-Type, ce-traceparent and
		// ce-tracestate for the trace: ten attributes at most.
		m.attrs[AttributeContentType] = enc.ContentType
		for _, a := range enc.Attributes {
			m.attrs[CloudEventsPrefix+a.Name] = a.Value
		}
	} else {
		m.attrs[AttributeID], m.attrs[AttributeType] = e.ID, e.Type
		for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under
			if v := e.Metadata[k]; v != "" {
				m.attrs[k] = v
			}
		}
		if s.enc.Format() != sink.EnvelopeOutbox {
			m.attrs[AttributeContentType] = enc.ContentType
		}
	}
	if s.t.fifo {
		m.group, m.dedup = MessageGroup(e), e.ID
	}
	m.size = len(m.body)
	for k, v := range m.attrs {
		m.size += len(k) + len("String") + len(v)
	}
	return m, nil
}

// escapeNoncharacters writes U+FFFE and U+FFFF, which SQS refuses in a message, as
// JSON escapes: they can only stand inside a JSON string, where the escape means the
// same character.
func escapeNoncharacters(s string) string {
	if !strings.ContainsAny(s, "\uFFFE\uFFFF") {
		return s
	}
	return strings.NewReplacer("\uFFFE", `\ufffe`, "\uFFFF", `\uffff`).Replace(s)
}

// Handle sends one event and waits for the service's answer.
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	return s.HandleBatch(ctx, []outbox.Event{e})[0]
}

// HandleBatch sends the events in calls of up to MaxBatchEntries messages and
// Config.MaxBatchBytes, one call after another; errs[i] is nil when the service
// accepted events[i]. Once a call meets a fault of the destination (unreachable,
// credentials, the queue or topic missing), the events not yet sent fail with it,
// unsent. An error's text is fit for a store whatever the service answered.
func (s *Sink) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	msgs := make([]*message, 0, len(events))
	for i, e := range events {
		m, err := s.message(i, e)
		if err != nil {
			errs[i] = err
			continue
		}
		msgs = append(msgs, m)
	}
	var held error // a fault of the destination: the rest would meet it alike
	failedGroups := map[string]bool{}
	for _, chunk := range s.chunks(msgs) {
		var send []*message
		for _, m := range chunk {
			switch {
			case held != nil:
				errs[m.i] = held
			case ctx.Err() != nil:
				errs[m.i] = fmt.Errorf("not sent to %s: %w", s.t.name, ctx.Err())
			case m.group != "" && failedGroups[m.group]:
				// An earlier event of the group failed in this batch: sending this one
				// would put it ahead of that one in the queue.
				errs[m.i] = fmt.Errorf("not sent to %s: an earlier event of message group %q failed in this batch", s.t.name, m.group)
			default:
				send = append(send, m)
			}
		}
		if len(send) == 0 {
			continue
		}
		for j, err := range s.sendChunk(ctx, send) {
			m := send[j]
			errs[m.i] = err
			if err == nil {
				continue
			}
			if m.group != "" {
				failedGroups[m.group] = true
			}
			var de *outbox.DestinationError
			if errors.As(err, &de) && !de.Suspected {
				held = err
			}
		}
	}
	for i, err := range errs {
		errs[i] = outbox.CleanError(err) // a server's answer may hold anything
	}
	return errs
}

// chunks splits msgs into calls: at most MaxBatchEntries messages each, and at most
// MaxBatchBytes unless one message alone is larger.
func (s *Sink) chunks(msgs []*message) [][]*message {
	var out [][]*message
	var cur []*message
	size := 0
	for _, m := range msgs {
		if len(cur) > 0 && (len(cur) == MaxBatchEntries || size+m.size > s.cfg.MaxBatchBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, m)
		size += m.size
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// sendChunk sends one call's messages and returns each one's outcome.
func (s *Sink) sendChunk(ctx context.Context, msgs []*message) []error {
	if len(msgs) == 1 {
		return []error{s.sendOne(ctx, msgs[0])}
	}
	errs, err := s.sendBatch(ctx, msgs)
	if err == nil {
		return errs
	}
	errs = make([]error, len(msgs))
	if !refusedContent(err) {
		err = s.classify(err)
		for j := range errs {
			errs[j] = err
		}
		return errs
	}
	// The call was refused for what one of its messages holds (SQS checks every entry
	// before it takes any): send each alone, so that only that one fails.
	for j, m := range msgs {
		if cerr := ctx.Err(); cerr != nil {
			errs[j] = fmt.Errorf("not sent to %s: %w", s.t.name, cerr)
			continue
		}
		errs[j] = s.sendOne(ctx, m)
	}
	return errs
}

func (s *Sink) sendOne(ctx context.Context, m *message) error {
	var err error
	if s.t.queue {
		_, err = s.sqs.SendMessage(ctx, &sqs.SendMessageInput{
			QueueUrl: aws.String(s.t.name), MessageBody: aws.String(m.body), MessageAttributes: sqsAttributes(m.attrs),
			MessageGroupId: optional(m.group), MessageDeduplicationId: optional(m.dedup),
		})
	} else {
		_, err = s.sns.Publish(ctx, &sns.PublishInput{
			TopicArn: aws.String(s.t.name), Message: aws.String(m.body), MessageAttributes: snsAttributes(m.attrs),
			MessageGroupId: optional(m.group), MessageDeduplicationId: optional(m.dedup),
		})
	}
	return s.classify(err)
}

// entryResult is one failed entry of a batch call's answer.
type entryResult struct {
	code, message string
	senderFault   bool
}

// sendBatch makes one batch call. It returns each message's outcome, or the call's
// error when the call as a whole failed.
func (s *Sink) sendBatch(ctx context.Context, msgs []*message) ([]error, error) {
	ok := map[string]bool{}
	failed := map[string]entryResult{}
	if s.t.queue {
		entries := make([]sqstypes.SendMessageBatchRequestEntry, len(msgs))
		for j, m := range msgs {
			entries[j] = sqstypes.SendMessageBatchRequestEntry{
				Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(m.body), MessageAttributes: sqsAttributes(m.attrs),
				MessageGroupId: optional(m.group), MessageDeduplicationId: optional(m.dedup),
			}
		}
		out, err := s.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(s.t.name), Entries: entries})
		if err != nil {
			return nil, err
		}
		for _, e := range out.Successful {
			ok[aws.ToString(e.Id)] = true
		}
		for _, e := range out.Failed {
			failed[aws.ToString(e.Id)] = entryResult{aws.ToString(e.Code), aws.ToString(e.Message), e.SenderFault}
		}
	} else {
		entries := make([]snstypes.PublishBatchRequestEntry, len(msgs))
		for j, m := range msgs {
			entries[j] = snstypes.PublishBatchRequestEntry{
				Id: aws.String(strconv.Itoa(j)), Message: aws.String(m.body), MessageAttributes: snsAttributes(m.attrs),
				MessageGroupId: optional(m.group), MessageDeduplicationId: optional(m.dedup),
			}
		}
		out, err := s.sns.PublishBatch(ctx, &sns.PublishBatchInput{TopicArn: aws.String(s.t.name), PublishBatchRequestEntries: entries})
		if err != nil {
			return nil, err
		}
		for _, e := range out.Successful {
			ok[aws.ToString(e.Id)] = true
		}
		for _, e := range out.Failed {
			failed[aws.ToString(e.Id)] = entryResult{aws.ToString(e.Code), aws.ToString(e.Message), e.SenderFault}
		}
	}
	errs := make([]error, len(msgs))
	for j := range msgs {
		id := strconv.Itoa(j)
		if f, isFailed := failed[id]; isFailed {
			errs[j] = s.entryError(f)
		} else if !ok[id] {
			errs[j] = fmt.Errorf("send to %s: the answer says nothing of entry %s", s.t.name, id)
		}
	}
	return errs, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

func sqsAttributes(attrs map[string]string) map[string]sqstypes.MessageAttributeValue {
	out := make(map[string]sqstypes.MessageAttributeValue, len(attrs))
	for k, v := range attrs {
		out[k] = sqstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return out
}

func snsAttributes(attrs map[string]string) map[string]snstypes.MessageAttributeValue {
	out := make(map[string]snstypes.MessageAttributeValue, len(attrs))
	for k, v := range attrs {
		out[k] = snstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return out
}
