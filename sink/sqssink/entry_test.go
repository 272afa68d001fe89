package sqssink

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestEntryError maps the failed entries of a SendMessageBatch or PublishBatch answer,
// as SQS documents them, to outcomes: the sender's fault is the message's (given up),
// the service's is retried, and codes about the destination hold it whatever the
// flag says. moto fails SQS entries only for an invalid delay, which the sink never
// sets, so the mapping is checked here on the answer's own fields.
func TestEntryError(t *testing.T) {
	t.Parallel()
	for _, queue := range []bool{true, false} {
		cfg := Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"}
		if !queue {
			cfg = Config{TopicARN: "arn:aws:sns:eu-west-1:123456789012:orders"}
		}
		s, err := New(aws.Config{}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			entry entryResult
			want  sinktest.Verdict
		}{
			{entryResult{"InvalidParameterValue", "Message must be shorter than 262144 bytes.", true}, sinktest.Verdict{Class: sinktest.GivenUp}},
			{entryResult{"InvalidMessageContents", "Invalid binary character '#x0'", true}, sinktest.Verdict{Class: sinktest.GivenUp}},
			{entryResult{"SomethingNew", "the sender did it", true}, sinktest.Verdict{Class: sinktest.GivenUp}},
			{entryResult{"InternalError", "try again", false}, sinktest.Verdict{Class: sinktest.Retry}},
			{entryResult{"RequestThrottled", "slow down", false}, sinktest.Verdict{Class: sinktest.Retry}},
			{entryResult{"AccessDenied", "not yours", true}, sinktest.Verdict{Class: sinktest.Held, Reason: outbox.ReasonCredentials, Target: s.Target()}},
			{entryResult{"KmsDisabled", "key disabled", true}, sinktest.Verdict{Class: sinktest.Held, Reason: ReasonKeyUnusable, Target: s.Target()}},
			{entryResult{"AWS.SimpleQueueService.NonExistentQueue", "gone", true}, sinktest.Verdict{Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: s.Target()}},
		} {
			got := sinktest.Classify(s.entryError(tc.entry))
			if got != tc.want {
				t.Errorf("%s entry %+v: %s, want %s", s.Target(), tc.entry, got, tc.want)
			}
		}
	}
}
