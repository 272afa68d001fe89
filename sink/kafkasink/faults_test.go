package kafkasink_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// wantFault fails the test unless err is a DestinationError with reason and target:
// delivery held, no attempt spent.
func wantFault(t *testing.T, err error, reason, target string) {
	t.Helper()
	var de *outbox.DestinationError
	if !errors.As(err, &de) || de.Reason != reason || de.Target != target || de.Suspected || !outbox.IsUnavailable(err) {
		t.Fatalf("got %v; want a destination fault %q for target %q", err, reason, target)
	}
}

// wantRetried fails the test unless err is a failure the outbox retries: neither
// permanent nor a destination fault.
func wantRetried(t *testing.T, err error) {
	t.Helper()
	var de *outbox.DestinationError
	if err == nil || outbox.IsPermanent(err) || errors.As(err, &de) {
		t.Fatalf("got %v; want a retryable failure", err)
	}
}

// handleWithin runs Handle under a deadline of d and fails the test if it has not
// returned a minute later: the sink must not outlive its handler's deadline.
func handleWithin(t *testing.T, s *kafkasink.Sink, d time.Duration, e outbox.Event) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Handle(ctx, e) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d + time.Minute):
		t.Fatalf("Handle has not returned a minute after its %s deadline", d)
		return nil
	}
}

// idsIn returns how often each event ID is in the records.
func idsIn(recs []*kgo.Record) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[header(r, kafkasink.HeaderID)]++
	}
	return n
}

// The cluster goes down after a delivery, so the next event's produce is written to a
// dead connection and never answered. When the handler's deadline passes, the sink
// reports the cluster unreachable (delivery held, no attempt spent) instead of waiting
// for the outage to end. The cluster comes back on the same port and data; the event's
// next delivery, on the same sink, is acknowledged, and the topic holds it once: the
// record sent during the outage was not produced a second time.
func TestClusterDownIsUnavailableThenDelivered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func(opts ...kfake.Opt) *kfake.Cluster {
		c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	c := start(kfake.SeedTopics(1, testTopic))
	_, portStr, _ := net.SplitHostPort(c.ListenAddrs()[0])
	port, _ := strconv.Atoi(portStr)
	s := newSink(t, newClient(t, c), testTopic)
	first, second := event("a", "e1"), event("a", "e2")
	if err := s.Handle(context.Background(), first); err != nil {
		t.Fatal(err)
	}

	c.Close()
	wantFault(t, handleWithin(t, s, 2*time.Second, second), outbox.ReasonUnreachable, "")

	c = start(kfake.Ports(port))
	if err := handleWithin(t, s, 30*time.Second, second); err != nil {
		t.Fatalf("after the cluster came back: %v", err)
	}
	if n := idsIn(readTopic(t, c, testTopic)); len(n) != 2 || n[first.ID] != 1 || n[second.ID] != 1 {
		t.Fatalf("topic holds %v; want each event once", n)
	}
}

// An acknowledgement slower than the handler's deadline, from a cluster that answers
// otherwise: the event is retried (not held: the brokers are up), and its next
// delivery takes the late acknowledgement instead of producing the record again.
func TestAckSlowerThanTheDeadlineIsRetriedWithoutDuplicate(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1)
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.DropControl() // the first produce only
		c.SleepControl(func() { <-release })
		return nil, nil, false // then the cluster handles it as usual
	})
	s := newSink(t, newClient(t, c), testTopic)
	e := event("a", "e1")
	err := handleWithin(t, s, 500*time.Millisecond, e)
	wantRetried(t, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want it to name the deadline", err)
	}
	close(release)
	if err := handleWithin(t, s, 30*time.Second, e); err != nil {
		t.Fatalf("delivered again once the broker answered: %v", err)
	}
	if n := idsIn(readTopic(t, c, testTopic)); len(n) != 1 || n[e.ID] != 1 {
		t.Fatalf("topic holds %v; want the event once", n)
	}
}

// A topic deleted under the sink holds its events (target missing), and once the topic
// is recreated the same sink delivers to it: the client is made to forget the old
// topic ID instead of failing with UNKNOWN_TOPIC_ID until restarted. The same when the
// topic is deleted and recreated between two deliveries.
func TestTopicDeletedAndRecreatedRecoversOnTheSameSink(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1)
	s := newSink(t, newClient(t, c), testTopic)
	if err := s.Handle(context.Background(), event("a", "e0")); err != nil {
		t.Fatal(err)
	}

	if err := c.DeleteTopic(testTopic); err != nil {
		t.Fatal(err)
	}
	e1 := event("a", "e1")
	wantFault(t, handleWithin(t, s, 30*time.Second, e1), outbox.ReasonTargetMissing, testTopic)
	if err := c.CreateTopic(testTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := handleWithin(t, s, 30*time.Second, e1); err != nil {
		t.Fatalf("after the topic was created again: %v", err)
	}

	if err := c.DeleteTopic(testTopic); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(testTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	e2 := event("a", "e2")
	if err := handleWithin(t, s, 30*time.Second, e2); err != nil {
		// The client may learn of the recreation from the failed produce (UNKNOWN_TOPIC_ID).
		wantFault(t, err, outbox.ReasonTargetMissing, testTopic)
		if err := handleWithin(t, s, 30*time.Second, e2); err != nil {
			t.Fatalf("delivered again after the recreation: %v", err)
		}
	}
	if n := idsIn(readTopic(t, c, testTopic)); len(n) != 1 || n[e2.ID] != 1 {
		t.Fatalf("recreated topic holds %v; want the last event once", n)
	}
}

// Under the default topic outbox.{type}, one type's topic is missing. A batch that
// mixes its events with another type's delivers the other type's and holds the
// missing topic's (target missing, that topic only) at once: the client here would
// retry an unknown topic for ever (UnknownTopicRetries(-1)), so only the sink's own
// look-up can answer before the deadline, which is why the errors must not be the
// deadline's. Once the topic exists, its events go through on the same sink.
func TestMissingTopicFailsAtOnceAndAlone(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, kfake.SeedTopics(1, "outbox.present"))
	s := newSink(t, newClient(t, c, kgo.UnknownTopicRetries(-1)), "")
	batch := []outbox.Event{event("present", "1"), event("absent", "2"), event("present", "3"), event("absent", "4")}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := s.HandleBatch(ctx, batch)
	for i, err := range errs {
		if batch[i].Type == "present" {
			if err != nil {
				t.Fatalf("event %d (present topic): %v", i, err)
			}
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("event %d (missing topic): %v; want a failure before the deadline", i, err)
		}
		wantFault(t, err, outbox.ReasonTargetMissing, "outbox.absent")
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("event %d: %v; want it to carry UNKNOWN_TOPIC_OR_PARTITION", i, err)
		}
	}

	if err := c.CreateTopic("outbox.absent", 1, nil); err != nil {
		t.Fatal(err)
	}
	for i, err := range s.HandleBatch(ctx, []outbox.Event{batch[1], batch[3]}) {
		if err != nil {
			t.Fatalf("event %d after the topic was created: %v", i, err)
		}
	}
}

// A broker that refuses the credentials, as Kafka does (SASL_AUTHENTICATION_FAILED),
// holds the whole destination with the cause named, at once.
func TestCredentialsRejectedHoldTheCluster(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "relay", "s3cret"))
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	opts, err := kafkasink.ParseURL("kafka://relay:wrong@" + c.ListenAddrs()[0] + "/?sasl=scram-sha-256")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = handleWithin(t, newSink(t, cl, testTopic), 20*time.Second, event("a", "e1"))
	wantFault(t, err, outbox.ReasonCredentials, "")
	if !errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want SASL_AUTHENTICATION_FAILED before the deadline", err)
	}
}

func TestProbeTimeoutMustNotBeNegative(t *testing.T) {
	t.Parallel()
	err := kafkasink.Config{ProbeTimeout: -time.Second}.Validate()
	if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "Config.ProbeTimeout") {
		t.Fatalf("Validate = %v; want an error naming Config.ProbeTimeout", err)
	}
}
