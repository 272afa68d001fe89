package kafkasink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/kafkasink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

const testTopic = "outbox-test"

// newCluster starts a kfake cluster of n brokers in the test process, with testTopic
// seeded over partitions partitions.
func newCluster(t *testing.T, brokers int, partitions int32, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(brokers), kfake.SeedTopics(partitions, testTopic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	// Fresh metadata and a retry at once after a fault, instead of the default waits.
	base := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(10 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond })}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newSink(t *testing.T, cl *kgo.Client, topic string) *kafkasink.Sink {
	t.Helper()
	s, err := kafkasink.New(cl, kafkasink.Config{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keyedPayload is what enqueueKeyed puts in each event: its key and its place among the
// key's events.
type keyedPayload struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

// enqueueKeyed writes n events spread over keys ordering keys, in order: event i is
// number i/keys of key i%keys. It returns their IDs.
func enqueueKeyed(t *testing.T, s outbox.Store, n, keys int) map[string]bool {
	t.Helper()
	ids := make(map[string]bool, n)
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			typ := "order.updated"
			if i < keys {
				typ = "order.created"
			}
			e := outbox.NewEvent(typ, fmt.Sprintf("entity-%d", i), fmt.Sprintf("user-%d", i%7))
			e.OrderingKey = fmt.Sprintf("key-%d", i%keys)
			e.Payload, _ = json.Marshal(keyedPayload{Key: e.OrderingKey, N: i / keys})
			batch = append(batch, e)
		}
		if err := s.Enqueue(context.Background(), time.Now(), batch...); err != nil {
			t.Fatal(err)
		}
		for _, e := range batch {
			ids[e.ID] = true
		}
	}
	return ids
}

// readTopic returns every record of topic, partition by partition in offset order.
func readTopic(t *testing.T, c *kfake.Cluster, topic string, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := kadm.NewClient(newClient(t, c, opts...))
	ends, err := admin.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		want[o.Partition] = o.Offset
		total += o.Offset
	})
	cons := newClient(t, c, append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	var recs []*kgo.Record
	for int64(len(recs)) < total {
		f := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(recs), total, err)
		}
		f.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		recs = append(recs, f.Records()...)
	}
	return recs
}

// checkDelivered checks that every event is in the records exactly once, and that each
// key's events sit in one partition, numbered 0, 1, 2, … in offset order.
func checkDelivered(t *testing.T, recs []*kgo.Record, ids map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	type place struct {
		partition int32
		next      int
		offset    int64
	}
	keys := map[string]*place{}
	for _, r := range recs {
		id := header(r, kafkasink.HeaderID)
		seen[id]++
		if seen[id] > 1 {
			continue // counted below
		}
		env, err := envelope(r)
		if err != nil || env.ID != id {
			t.Fatalf("record %d/%d: envelope %s (%v) does not carry its ID %q", r.Partition, r.Offset, r.Value, err, id)
		}
		var p keyedPayload
		if err := json.Unmarshal(env.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != p.Key {
			t.Fatalf("event %s of key %s has record key %q", id, p.Key, r.Key)
		}
		k := keys[p.Key]
		if k == nil {
			k = &place{partition: r.Partition}
			keys[p.Key] = k
		}
		switch {
		case r.Partition != k.partition:
			t.Fatalf("key %s in partitions %d and %d", p.Key, k.partition, r.Partition)
		case p.N != k.next:
			t.Fatalf("key %s: event #%d at offset %d after #%d at offset %d; want #%d", p.Key, p.N, r.Offset, k.next-1, k.offset, k.next)
		}
		k.next++
		k.offset = r.Offset
	}
	missing, dup := 0, 0
	for id := range ids {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing > 0 || dup > 0 || len(seen) != len(ids) {
		t.Fatalf("of %d events: %d missing, %d more than once, %d records not from an event", len(ids), missing, dup, len(seen)-len(ids)+missing)
	}
}

// leaderOf returns the broker leading partition 0 of testTopic.
func leaderOf(c *kfake.Cluster) int32 { return c.LeaderFor(testTopic, 0) }

// Thousands of events relayed to three brokers, and in the middle of the run the
// partition leaders are re-elected and one broker fails produce requests three ways: it writes a request and answers that it
// timed out (a lost acknowledgement), it writes and answers that too few replicas
// confirmed, and it drops connections before reading the request. The idempotent
// producer retries each; every event is in the topic once, each key's in order.
//
// The size: 2,000 events of 200 keys (10 each) give the second half at least five
// claims, and the faults are all answered by the client's own retries of the first of
// them (the test fails if any fault is left unanswered). It was 10,000; the claims of
// a SQLite outbox under the race detector, not Kafka, took most of its 40 s.
func TestThousandsOfEventsExactlyOnceOnThreeBrokers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, 6)
	cl := newClient(t, c)
	store := sqlitetest.NewStore(t)
	const n, keys = 2_000, 200
	ids := enqueueKeyed(t, store, n, keys)

	obs := outboxtest.NewRecorder(n, n/2)
	p, err := outbox.NewProcessor(store, newSink(t, cl, testTopic), outbox.Config{
		BatchSize: 500, PollInterval: 20 * time.Millisecond, Observers: []outbox.Observer{obs}, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{0}, MaxAttempts: 1000, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	defer obs.Resume()

	obs.Wait(t, obs.Paused(), 2*time.Minute, "half the events")
	c.ShufflePartitionLeaders() // an election: the client's next produce meets NOT_LEADER and follows
	node := leaderOf(c)
	produce := []kmsg.Key{kmsg.Produce}
	applied := c.Fault(
		kfake.Fault{Keys: produce, Nodes: []int32{node}, Err: kerr.RequestTimedOut, Count: 20},
		kfake.Fault{Keys: produce, Nodes: []int32{node}, Err: kerr.NotEnoughReplicasAfterAppend, Count: 20},
	)
	var dropped atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if c.CurrentNode() != node {
			return nil, nil, false
		}
		if dropped.Add(1) >= 20 {
			c.DropControl()
		}
		c.KeepControl()
		return nil, errors.New("connection dropped by the test"), true
	})
	obs.Resume()
	obs.Wait(t, obs.AllDelivered(), 2*time.Minute, "every event after the faults")
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if applied.Hits() != 40 || dropped.Load() < 20 {
		t.Fatalf("faults answered %d of 40 requests, %d of 20 connections dropped: the faults did not all happen", applied.Hits(), dropped.Load())
	}
	stats, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Completed != n || stats.GivenUp != 0 {
		t.Fatalf("%d completed, %d given up; want %d and 0", stats.Completed, stats.GivenUp, n)
	}
	t.Logf("broker %d: %d requests written and answered as failed, %d connections dropped; %d attempts failed back to the outbox",
		node, applied.Hits(), dropped.Load(), obs.Failed.Load())
	checkDelivered(t, readTopic(t, c, testTopic), ids)
}

// Records whose produce fails for good (the client gives up after its retries) fail
// their events back to the outbox, which retries them alone. A failed event blocks its
// key, so no later event of the key lands before it; and the client fails a record only
// when the broker has not written it, so the retry adds no duplicate. (Bounding the
// client's retries with kgo.RecordRetries is what lets these failures reach the outbox.)
func TestFailedEventIsNotOvertakenByLaterEventsOfItsKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, 6)
	cl := newClient(t, c, kgo.RecordRetries(1), kgo.RetryBackoffFn(func(int) time.Duration { return time.Millisecond }))
	store := sqlitetest.NewStore(t)
	const n, keys = 1200, 60 // 20 events a key; the 30 refusals come after the first third
	ids := enqueueKeyed(t, store, n, keys)

	obs := outboxtest.NewRecorder(n, n/3)
	p, err := outbox.NewProcessor(store, newSink(t, cl, testTopic), outbox.Config{
		BatchSize: 200, PollInterval: 20 * time.Millisecond, Observers: []outbox.Observer{obs}, Logger: outboxtest.Discard,
		Retry: outbox.RetryPolicy{Delays: []time.Duration{0}, MaxAttempts: 1000, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	defer obs.Resume()

	obs.Wait(t, obs.Paused(), 2*time.Minute, "a third of the events")
	// Refused before it is written, retriable: the client retries once, then fails the
	// records of that broker's partitions; the other brokers' records complete.
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Nodes: []int32{leaderOf(c)}, Err: kerr.NotEnoughReplicas, Count: 30})
	obs.Resume()
	obs.Wait(t, obs.FirstFailure(), 2*time.Minute, "an event to fail back to the outbox")
	obs.Wait(t, obs.AllDelivered(), 2*time.Minute, "every event after the retries")
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d produce requests refused; %d attempts failed back to the outbox and were retried", h.Hits(), obs.Failed.Load())
	if obs.Failed.Load() == 0 || obs.GivenUp.Load() != 0 {
		t.Fatalf("%d failed attempts, %d given up: want some failed and none given up", obs.Failed.Load(), obs.GivenUp.Load())
	}
	checkDelivered(t, readTopic(t, c, testTopic), ids)
}

// header returns the value of r's first header named key, or "".
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// envelope decodes r's value.
func envelope(r *kgo.Record) (sink.Envelope, error) {
	var env sink.Envelope
	err := json.Unmarshal(r.Value, &env)
	return env, err
}

func event(typ, entity string) outbox.Event {
	return outbox.Event{ID: uuid.NewString(), Type: typ, EntityID: entity, Attempts: 1, CreatedAt: time.Now()}
}

// A record that fails permanently fails its event and, because the producer keeps each
// partition gapless, the events behind it in the same partition; the events of the
// other partitions are written. Every outcome matches what the topic holds.
func TestBadRecordFailsOnlyItsPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 2)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{0}, Err: kerr.MessageTooLarge, Count: -1})
	s := newSink(t, newClient(t, c), testTopic)
	var events []outbox.Event
	for i := range 20 {
		events = append(events, event("a", fmt.Sprintf("entity-%d", i)))
	}
	errs := s.HandleBatch(context.Background(), events)
	written := map[string]bool{}
	for _, r := range readTopic(t, c, testTopic) {
		written[header(r, kafkasink.HeaderID)] = true
	}
	failed := 0
	for i, err := range errs {
		switch {
		case err == nil && !written[events[i].ID]:
			t.Errorf("event %d reported delivered but is not in the topic", i)
		case err != nil && written[events[i].ID]:
			t.Errorf("event %d reported failed (%v) but is in the topic", i, err)
		case err != nil && !(outbox.IsPermanent(err) && errors.Is(err, kerr.MessageTooLarge)):
			t.Errorf("event %d: %v; want a permanent MESSAGE_TOO_LARGE", i, err)
		case err != nil:
			failed++
		}
	}
	if failed == 0 || failed == len(events) {
		t.Fatalf("%d of %d events failed; want those of partition 0 only", failed, len(events))
	}
}

// What the brokers (or the client) answer decides what the outbox does with the event:
// give it up (the record's own fault), hold it with its topic or with the whole
// destination (a fault every event bound there meets), or retry it.
func TestErrorsClassified(t *testing.T) {
	t.Parallel()
	const (
		permanent = "permanent"
		retried   = "retried"
		target    = "held for the topic"
		cluster   = "held for the cluster"
	)
	tests := []struct {
		name   string
		fault  *kerr.Error // answered to every produce request; nil: none
		topic  string
		opts   []kgo.Opt
		want   error
		kind   string
		reason string
	}{
		{"record over the client's batch limit", nil, testTopic, []kgo.Opt{kgo.ProducerBatchMaxBytes(512)}, kerr.MessageTooLarge, permanent, ""},
		{"broker says too large", kerr.MessageTooLarge, testTopic, nil, kerr.MessageTooLarge, permanent, ""},
		{"not authorized for the topic", kerr.TopicAuthorizationFailed, testTopic, nil, kerr.TopicAuthorizationFailed, target, outbox.ReasonCredentials},
		{"not authorized on the cluster", kerr.ClusterAuthorizationFailed, testTopic, nil, kerr.ClusterAuthorizationFailed, cluster, outbox.ReasonCredentials},
		{"unknown topic, auto-create off", nil, "no-such-topic", nil, kerr.UnknownTopicOrPartition, target, outbox.ReasonTargetMissing},
		{"invalid topic", kerr.InvalidTopicException, testTopic, nil, kerr.InvalidTopicException, target, kafkasink.ReasonInvalidTopic},
		{"not enough replicas, retries exhausted", kerr.NotEnoughReplicas, testTopic, nil, kerr.NotEnoughReplicas, retried, ""},
		{"leader moved, retries exhausted", kerr.NotLeaderForPartition, testTopic, nil, kerr.NotLeaderForPartition, retried, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 1, 1)
			if tt.fault != nil {
				c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: tt.fault, Count: -1})
			}
			opts := append(tt.opts, kgo.RecordRetries(2), kgo.RetryBackoffFn(func(int) time.Duration { return time.Millisecond }))
			e := event("a", "e1")
			e.Payload = json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
			err := newSink(t, newClient(t, c, opts...), tt.topic).Handle(context.Background(), e)
			var de *outbox.DestinationError
			isDest := errors.As(err, &de)
			var kind, reason string
			switch {
			case err == nil:
				kind = "delivered"
			case outbox.IsPermanent(err) && !isDest:
				kind = permanent
			case isDest && de.Target == tt.topic:
				kind, reason = target, de.Reason
			case isDest && de.Target == "":
				kind, reason = cluster, de.Reason
			case !isDest && !outbox.IsPermanent(err):
				kind = retried
			}
			if !errors.Is(err, tt.want) || kind != tt.kind || reason != tt.reason {
				t.Fatalf("Handle = %v (%s, %q); want %v, %s, %q", err, kind, reason, tt.want, tt.kind, tt.reason)
			}
		})
	}
}

// A cluster that cannot be reached (nothing listens where the seed broker was) holds
// delivery at once: unavailable, not an attempt spent.
func TestUnreachableClusterIsUnavailable(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1)
	addrs := c.ListenAddrs()
	c.Close() // refuse connections from now on
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = newSink(t, cl, testTopic).Handle(ctx, event("a", "e1"))
	wantFault(t, err, outbox.ReasonUnreachable, "")
}

func TestRecordCarriesKeyHeadersAndEnvelope(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 3, kfake.SeedTopics(1, "events.order.created.u_1"))
	s := newSink(t, newClient(t, c), "events.{type}.{user_id}")
	e := event("order.created", "order-9")
	e.UserID, e.OrderingKey = "u/1", "customer-4"
	e.Metadata = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1", "baggage": "tenant=acme", "source": "api"}
	e.Payload = json.RawMessage(`{"total":12}`)
	if err := s.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	recs := readTopic(t, c, "events.order.created.u_1")
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	rec := recs[0]
	if string(rec.Key) != "customer-4" {
		t.Errorf("key %q, want the ordering key", rec.Key)
	}
	for k, want := range map[string]string{
		kafkasink.HeaderID: e.ID, kafkasink.HeaderType: "order.created", kafkasink.HeaderUserID: "u/1",
		kafkasink.HeaderContentType: sink.ContentType, "traceparent": e.Metadata["traceparent"], "tracestate": "a=1", "baggage": "tenant=acme", "source": "",
	} {
		if got := header(rec, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	env, err := envelope(rec)
	if err != nil || env.ID != e.ID || env.EntityID != "order-9" || string(env.Payload) != `{"total":12}` {
		t.Errorf("envelope %+v (%v)", env, err)
	}

	// Without an ordering key, the entity ID is the key.
	r, err := s.Record(event("order.created", "order-10"))
	if err != nil || string(r.Key) != "order-10" {
		t.Errorf("record key %q (%v), want the entity ID", r.Key, err)
	}
}

func TestTopicTemplate(t *testing.T) {
	t.Parallel()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tests := []struct {
		template string
		e        outbox.Event
		want     string
		err      string
	}{
		{"", outbox.Event{Type: "order.created"}, "outbox.order.created", ""},
		{"app.{user_id}.{type}", outbox.Event{Type: "a b", UserID: "x/y:z"}, "app.x_y_z.a_b", ""},
		{"app-{entity_id}", outbox.Event{}, "app-_", ""},
		{"app.{kind}", outbox.Event{}, "", "unknown placeholder {kind}"},
		{"app/{type}", outbox.Event{}, "", "contains '/'"},
		{"..", outbox.Event{}, "", "not a valid name"},
		{strings.Repeat("t", 250), outbox.Event{}, "", "over Kafka's limit"},
	}
	for _, tt := range tests {
		s, err := kafkasink.New(cl, kafkasink.Config{Topic: tt.template})
		if verr := (kafkasink.Config{Topic: tt.template}).Validate(); (verr == nil) != (err == nil) {
			t.Errorf("template %q: Validate = %v but New = %v", tt.template, verr, err)
		}
		if tt.err != "" {
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "Config.Topic") {
				t.Errorf("template %q: New = %v, want an error about Config.Topic: %q", tt.template, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("template %q: %v", tt.template, err)
			continue
		}
		if got := s.Topic(tt.e); got != tt.want {
			t.Errorf("template %q: topic %q, want %q", tt.template, got, tt.want)
		}
	}
}

func TestNewRefusesUnsafeClients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  kgo.Opt
		err  string
	}{
		{"defaults", nil, ""},
		{"idempotence off", kgo.DisableIdempotentWrite(), "DisableIdempotentWrite"},
		{"cancellation in flight", kgo.AllowIdempotentProduceCancellation(), "AllowIdempotentProduceCancellation"},
		{"leader ack", kgo.RequiredAcks(kgo.LeaderAck()), "AllISRAcks"},
	}
	for _, tt := range tests {
		opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
		if tt.opt != nil {
			opts = append(opts, tt.opt)
		}
		if tt.name == "leader ack" {
			opts = append(opts, kgo.DisableIdempotentWrite()) // franz-go refuses idempotence without acks=all
			tt.err = "DisableIdempotentWrite"
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		_, err = kafkasink.New(cl, kafkasink.Config{})
		cl.Close()
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: New = %v, want %q", tt.name, err, tt.err)
		}
	}
}
