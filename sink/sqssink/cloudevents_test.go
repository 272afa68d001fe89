package sqssink_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/sqssink"
)

// TestCloudEventsOnSQSAndSNS: in both CloudEvents modes, every message that reaches
// the queue (moto: an SQS FIFO queue; an SNS topic with a queue subscribed for raw
// delivery) is read by the CloudEvents Go SDK (binding/spec over the message
// attributes: ce- and the attribute, Content-Type as datacontenttype, or
// application/cloudevents+json for the structured mode) as its event, each event
// once. In the binary mode, an event whose attributes would pass SQS's ten, or that
// has no payload (a body cannot be empty), comes structured, whole.
//
// Not parallel with the package's other tests (its four cases run in parallel with
// each other, before those start): moto is one process for them all, and the
// conformance rows' timing should not have to share it with this test.
func TestCloudEventsOnSQSAndSNS(t *testing.T) {
	srv := sharedMoto(t)
	for _, topic := range []bool{false, true} {
		for _, tt := range []struct {
			format sink.EnvelopeFormat
			mode   binding.Encoding
		}{
			{sink.EnvelopeCloudEventsStructured, binding.EncodingStructured},
			{sink.EnvelopeCloudEventsBinary, binding.EncodingBinary},
		} {
			name := "sqs-fifo/" + string(tt.format)
			if topic {
				name = "sns/" + string(tt.format)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				queue := uniq("ce")
				cfg := sqssink.Config{Endpoint: srv.url(), Envelope: tt.format}
				if topic {
					if _, err := srv.createQueue(ctx, queue, nil); err != nil {
						t.Fatal(err)
					}
					out, err := srv.snsClient().CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(queue + "-t")})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := srv.snsClient().Subscribe(ctx, &sns.SubscribeInput{
						TopicArn: out.TopicArn, Protocol: aws.String("sqs"),
						Endpoint:   aws.String("arn:aws:sqs:" + testRegion + ":" + testAccount + ":" + queue),
						Attributes: map[string]string{"RawMessageDelivery": "true"},
					}); err != nil {
						t.Fatal(err)
					}
					cfg.TopicARN = aws.ToString(out.TopicArn)
				} else {
					queue += ".fifo"
					url, err := srv.createQueue(ctx, queue, nil)
					if err != nil {
						t.Fatal(err)
					}
					cfg.QueueURL = url
				}
				s := newSink(t, cfg)
				events := cetest.Events(8)
				byID := map[string]outbox.Event{}
				for _, e := range events {
					byID[e.ID] = e
				}
				for i, err := range s.HandleBatch(ctx, events) {
					if err != nil {
						t.Fatalf("event %d: %v", i, err)
					}
				}

				seen := map[string]int{}
				modes := map[binding.Encoding]int{}
				for {
					out, err := srv.sqsClient().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
						QueueUrl: aws.String(srv.queueURL(queue)), MaxNumberOfMessages: 10,
						MessageAttributeNames:       []string{"All"},
						MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
					})
					if err != nil {
						t.Fatal(err)
					}
					if len(out.Messages) == 0 {
						break
					}
					for _, m := range out.Messages {
						h := map[string]any{}
						for k, v := range m.MessageAttributes {
							h[k] = aws.ToString(v.StringValue)
						}
						if len(h) > sqssink.MaxAttributes {
							t.Errorf("%d message attributes, over SQS's %d: %v", len(h), sqssink.MaxAttributes, h)
						}
						body := []byte(aws.ToString(m.Body))
						ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: sqssink.CloudEventsPrefix, ContentType: sqssink.AttributeContentType, Body: body})
						if err != nil {
							t.Fatalf("the SDK cannot read a message (%v): %v %s", h, err, body)
						}
						e, ok := byID[ev.ID()]
						if !ok {
							t.Fatalf("an event that was not sent: %s", ev)
						}
						if want := wantMode(t, e, tt.format); mode != want {
							t.Errorf("event %s read in mode %v, want %v", e.ID, mode, want)
						}
						modes[mode]++
						seen[e.ID]++
						cetest.Check(t, ev, e, "")
						if !topic && (m.Attributes["MessageDeduplicationId"] != e.ID || m.Attributes["MessageGroupId"] != sqssink.MessageGroup(e)) {
							t.Errorf("event %s: FIFO attributes %v", e.ID, m.Attributes)
						}
						if _, err := srv.sqsClient().DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(srv.queueURL(queue)), ReceiptHandle: m.ReceiptHandle}); err != nil {
							t.Fatal(err)
						}
					}
				}
				for _, e := range events {
					if seen[e.ID] != 1 {
						t.Errorf("event %s reached the queue %d times, want once", e.ID, seen[e.ID])
					}
				}
				if tt.format == sink.EnvelopeCloudEventsBinary && (modes[binding.EncodingBinary] == 0 || modes[binding.EncodingStructured] == 0) {
					t.Errorf("modes %v: the events should have come both binary and structured", modes)
				}
			})
		}
	}
}

// wantMode is the mode e goes in: binary when asked and its attributes and content
// type fit ten message attributes and it has a payload.
func wantMode(t *testing.T, e outbox.Event, f sink.EnvelopeFormat) binding.Encoding {
	t.Helper()
	if f != sink.EnvelopeCloudEventsBinary || len(e.Payload) == 0 {
		return binding.EncodingStructured
	}
	attrs, err := sink.CloudEventAttributes(e, "")
	if err != nil {
		t.Fatal(err)
	}
	// datacontenttype goes as Content-Type: the count is the attributes'.
	if len(attrs) > sqssink.MaxAttributes {
		return binding.EncodingStructured
	}
	return binding.EncodingBinary
}

func TestCloudEventsConfigNamesTheField(t *testing.T) {
	t.Parallel()
	const q = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
	for _, tt := range []struct {
		cfg   sqssink.Config
		field string
	}{
		{sqssink.Config{QueueURL: q, Envelope: "binary"}, "sqssink.Config.Envelope"},
		{sqssink.Config{QueueURL: q, CloudEventsSource: "/x"}, "sqssink.Config.CloudEventsSource"},
	} {
		var fe *outbox.FieldError
		if err := tt.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
}
