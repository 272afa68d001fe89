package sqssink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/sinktest"
	"github.com/fitiq/outbox/sink/sqssink"
)

// uniq returns a name no other test uses.
func uniq(prefix string) string {
	return prefix + "-" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
}

func newEvent(entity, key string) outbox.Event {
	now := outbox.Timestamp(time.Now())
	id := uuid.Must(uuid.NewV7()).String()
	return outbox.Event{
		ID: id, Type: "order.created", EntityID: entity, UserID: "u1", OrderingKey: key, IsNewRecord: true,
		Payload: json.RawMessage(fmt.Sprintf(`{"entity":%q}`, entity)), Status: outbox.StatusProcessing,
		CreatedAt: now, UpdatedAt: now, Attempts: 1,
	}
}

func newSink(t *testing.T, cfg sqssink.Config) *sqssink.Sink {
	t.Helper()
	s, err := sqssink.New(testAWSConfig(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustDeliver(t *testing.T, s *sqssink.Sink, events []outbox.Event) {
	t.Helper()
	for i, err := range s.HandleBatch(t.Context(), events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

// TestFIFOQueue: on a FIFO queue each message's group is the event's ordering key (its
// entity ID when it has none) and its deduplication ID the event ID; a group's events
// come out in the order they were sent, batch after batch, as the processor sends
// them (one event of a key per batch).
func TestFIFOQueue(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	name := uniq("fifo") + ".fifo"
	url, err := srv.createQueue(t.Context(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, sqssink.Config{QueueURL: url, Endpoint: srv.url()})
	if !s.FIFO() {
		t.Fatal("FIFO() = false for a .fifo queue")
	}
	keys := []string{"order-1", "order-2", "order-3"}
	var sent []outbox.Event
	for round := range 4 {
		var batch []outbox.Event
		for _, k := range keys {
			batch = append(batch, newEvent(fmt.Sprintf("%s-line-%d", k, round), k))
		}
		batch = append(batch, newEvent(fmt.Sprintf("loose-%d", round), "")) // no ordering key
		mustDeliver(t, s, batch)
		sent = append(sent, batch...)
	}
	got, err := (&queueReader{srv: srv, url: url}).drain(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sent) {
		t.Fatalf("the queue held %d messages, want %d", len(got), len(sent))
	}
	byID := map[string]outbox.Event{}
	for _, e := range sent {
		byID[e.ID] = e
	}
	order := map[string][]string{} // group → event IDs as received
	for _, m := range got {
		e, ok := byID[m.ID]
		if !ok {
			t.Fatalf("a message of an unknown event: %s", m.Body)
		}
		wantGroup := cmpOr(e.OrderingKey, e.EntityID)
		if m.Group != wantGroup || m.Dedup != e.ID {
			t.Errorf("event %s: group %q, dedup %q; want %q, %q", e.ID, m.Group, m.Dedup, wantGroup, e.ID)
		}
		if m.Attrs[sqssink.AttributeID] != e.ID || m.Attrs[sqssink.AttributeType] != e.Type {
			t.Errorf("event %s: attributes %v", e.ID, m.Attrs)
		}
		order[m.Group] = append(order[m.Group], m.ID)
	}
	for _, k := range keys {
		var want []string
		for _, e := range sent {
			if e.OrderingKey == k {
				want = append(want, e.ID)
			}
		}
		if !slices.Equal(order[k], want) {
			t.Errorf("group %s came out as %v, want %v", k, order[k], want)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestFIFODeduplication: an event sent again (its answer was lost, the relay crashed
// before recording it) is stored once: its deduplication ID is its event ID.
func TestFIFODeduplication(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	url, err := srv.createQueue(t.Context(), uniq("dedup")+".fifo", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, sqssink.Config{QueueURL: url, Endpoint: srv.url()})
	e1, e2 := newEvent("a", ""), newEvent("b", "")
	mustDeliver(t, s, []outbox.Event{e1})
	e1.Attempts++
	mustDeliver(t, s, []outbox.Event{e1, e2}) // e1 again, in a batch
	if err := s.Handle(t.Context(), e1); err != nil {
		t.Fatal(err)
	}
	ids, err := (&queueReader{srv: srv, url: url, keep: true}).IDs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	want := []string{e1.ID, e2.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("the queue holds %v, want each event once: %v", ids, want)
	}
}

// TestBatches: a standard queue gets neither group nor deduplication ID; 25 events go
// as SendMessageBatch calls of at most 10, and Config.MaxBatchBytes splits them further;
// the trace metadata travels as attributes.
func TestBatches(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	front := &countingFront{upstream: srv.addr}
	hs := httptest.NewServer(front)
	t.Cleanup(hs.Close)

	for _, tc := range []struct {
		name     string
		maxBytes int
		n        int
		minCalls int
	}{
		{"by count", 0, 25, 3},
		{"by size", 2048, 10, 3}, // each message is about 600 bytes: three a call
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, err := srv.createQueue(t.Context(), uniq("std"), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newSink(t, sqssink.Config{QueueURL: url, Endpoint: hs.URL, MaxBatchBytes: tc.maxBytes})
			if s.FIFO() {
				t.Fatal("FIFO() = true for a standard queue")
			}
			var events []outbox.Event
			for i := range tc.n {
				e := newEvent(fmt.Sprintf("e%d", i), "k")
				e.Metadata = map[string]string{outbox.MetadataTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
				events = append(events, e)
			}
			before := front.count(url)
			mustDeliver(t, s, events)
			calls := front.count(url) - before
			if calls < tc.minCalls || calls > tc.n {
				t.Errorf("%d events went in %d calls, want at least %d", tc.n, calls, tc.minCalls)
			}
			got, err := (&queueReader{srv: srv, url: url}).drain(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.n {
				t.Fatalf("the queue held %d messages, want %d", len(got), tc.n)
			}
			for _, m := range got {
				if m.Group != "" || m.Dedup != "" {
					t.Errorf("a standard queue's message has group %q, dedup %q", m.Group, m.Dedup)
				}
				if m.Attrs[outbox.MetadataTraceparent] == "" || m.Attrs[sqssink.AttributeID] != m.ID {
					t.Errorf("attributes %v", m.Attrs)
				}
			}
		})
	}
}

// countingFront passes requests to moto and counts them by queue URL.
type countingFront struct {
	upstream string
	mu       sync.Mutex
	calls    map[string]int
}

func (f *countingFront) count(queueURL string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[queueURL]
}

func (f *countingFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct{ QueueUrl string }
	raw, _ := readAll(r)
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[body.QueueUrl]++
	f.mu.Unlock()
	(&hostileFront{upstream: f.upstream}).serveBody(w, r, raw)
}

// TestFIFOTopic: a FIFO topic gets the same group and deduplication IDs; a FIFO queue
// subscribed to it keeps each group's order.
func TestFIFOTopic(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	base := uniq("fifotopic")
	queueURL, err := srv.createQueue(t.Context(), base+"-q.fifo", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &awsDest{srv: srv, queue: base + "-q.fifo", topic: base + ".fifo"}
	if err := createFIFOTopic(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, sqssink.Config{TopicARN: topicARN(base + ".fifo"), Endpoint: srv.url()})
	if !s.FIFO() {
		t.Fatal("FIFO() = false for a .fifo topic")
	}
	var sent []outbox.Event
	for round := range 3 {
		batch := []outbox.Event{newEvent(fmt.Sprintf("a%d", round), "ka"), newEvent(fmt.Sprintf("b%d", round), "kb")}
		mustDeliver(t, s, batch)
		sent = append(sent, batch...)
	}
	got, err := (&queueReader{srv: srv, url: queueURL}).drain(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sent) {
		t.Fatalf("the subscribed queue held %d messages, want %d", len(got), len(sent))
	}
	order := map[string][]string{}
	for _, m := range got {
		order[m.Group] = append(order[m.Group], m.ID)
	}
	for _, k := range []string{"ka", "kb"} {
		var want []string
		for _, e := range sent {
			if e.OrderingKey == k {
				want = append(want, e.ID)
			}
		}
		if !slices.Equal(order[k], want) {
			t.Errorf("group %s came out as %v, want %v", k, order[k], want)
		}
	}
}

func createFIFOTopic(ctx context.Context, d *awsDest) error {
	c := d.srv.snsClient()
	out, err := c.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(d.topic), Attributes: map[string]string{"FifoTopic": "true"}})
	if err != nil {
		return err
	}
	_, err = c.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: out.TopicArn, Protocol: aws.String("sqs"),
		Endpoint:   aws.String("arn:aws:sqs:" + testRegion + ":" + testAccount + ":" + d.queue),
		Attributes: map[string]string{"RawMessageDelivery": "true"},
	})
	return err
}

// TestBatchEntryFailures: SNS answers a PublishBatch entry by entry; the entry it
// failed as the sender's fault (a message over SNS's 256 KiB) is given up, and the
// others of the call are delivered.
func TestBatchEntryFailures(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	base := uniq("entries")
	d := &awsDest{srv: srv, queue: base + "-q", topic: base}
	queueURL, err := srv.createQueue(t.Context(), d.queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.create(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A batch limit above SNS's own, so that the large message goes in the call.
	s := newSink(t, sqssink.Config{TopicARN: topicARN(base), Endpoint: srv.url(), MaxBatchBytes: 4 << 20})
	events := []outbox.Event{newEvent("a", ""), newEvent("big", ""), newEvent("c", "")}
	events[1].Payload = json.RawMessage(`{"pad":"` + strings.Repeat("x", 300<<10) + `"}`)
	errs := s.HandleBatch(t.Context(), events)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("the small events failed: %v, %v", errs[0], errs[2])
	}
	if v := sinktest.Classify(errs[1]); v.Class != sinktest.GivenUp {
		t.Fatalf("the large event: %s (%v), want given up", v, errs[1])
	}
	ids, err := (&queueReader{srv: srv, url: queueURL}).IDs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	want := []string{events[0].ID, events[2].ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("held %v, want %v", ids, want)
	}
}

// TestHostileAnswers: every kind of hostile answer is retried (the message may have
// landed), with an error text a store can keep.
func TestHostileAnswers(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	for _, kind := range []string{"queue", "topic"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			base := uniq("hostile")
			cfg := sqssink.Config{}
			if kind == "queue" {
				url, err := srv.createQueue(t.Context(), base, nil)
				if err != nil {
					t.Fatal(err)
				}
				cfg.QueueURL = url
			} else {
				if _, err := srv.createQueue(t.Context(), base+"-q", nil); err != nil {
					t.Fatal(err)
				}
				if err := (&awsDest{srv: srv, queue: base + "-q", topic: base}).create(t.Context()); err != nil {
					t.Fatal(err)
				}
				cfg.TopicARN = topicARN(base)
			}
			front := startHostileFront(t, srv.addr)
			cfg.Endpoint = "http://" + front.addr()
			s := newSink(t, cfg)
			for i := range hostileAnswers {
				err := s.Handle(t.Context(), newEvent(fmt.Sprintf("e%d", i), ""))
				if v := sinktest.Classify(err); v.Class != sinktest.Retry {
					t.Errorf("answer %d: %s (%v), want retry", i, v, err)
				}
				if err != nil {
					text := err.Error()
					if !utf8.ValidString(text) || strings.ContainsRune(text, 0) || len(text) > outbox.MaxErrorLength {
						t.Errorf("answer %d: error text not fit for a store (%d bytes): %q", i, len(text), text)
					}
				}
			}
		})
	}
}

// TestNoCredentials: when the SDK's chain has no credentials to give, delivery is held
// for credentials, not spent as an attempt.
func TestNoCredentials(t *testing.T) {
	t.Parallel()
	cfg := testAWSConfig()
	cfg.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("no EC2 IMDS role found")
	})
	s, err := sqssink.New(cfg, sqssink.Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders", Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Handle(t.Context(), newEvent("a", ""))
	if v := sinktest.Classify(err); v.Class != sinktest.Held || v.Reason != outbox.ReasonCredentials {
		t.Fatalf("%s (%v), want held: credentials rejected", v, err)
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  string
		want sqssink.Config
		bad  string // part of the error, when it must fail
	}{
		{raw: "sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo",
			want: sqssink.Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"}},
		{raw: "sqs://127.0.0.1:4566/000000000000/q?endpoint=http://127.0.0.1:4566&region=us-east-1",
			want: sqssink.Config{QueueURL: "https://127.0.0.1:4566/000000000000/q", Endpoint: "http://127.0.0.1:4566", Region: "us-east-1"}},
		{raw: "sqs://sqs.vpce.example.com/123456789012/q?region=eu-west-1",
			want: sqssink.Config{QueueURL: "https://sqs.vpce.example.com/123456789012/q", Endpoint: "https://sqs.vpce.example.com", Region: "eu-west-1"}},
		{raw: "sns://arn:aws:sns:eu-west-1:123456789012:orders",
			want: sqssink.Config{TopicARN: "arn:aws:sns:eu-west-1:123456789012:orders"}},
		{raw: "sns:///arn:aws:sns:eu-west-1:123456789012:orders.fifo?endpoint=http://127.0.0.1:4566",
			want: sqssink.Config{TopicARN: "arn:aws:sns:eu-west-1:123456789012:orders.fifo", Endpoint: "http://127.0.0.1:4566"}},
		{raw: "sqs://sqs.eu-west-1.amazonaws.com/orders", bad: "/ACCOUNT/NAME"},
		{raw: "sqs://sqs.eu-west-1.amazonaws.com/1/q?queue=x", bad: `unknown parameter "queue"`},
		{raw: "sns://orders", bad: "not a topic ARN"},
		{raw: "sns://arn:aws:sqs:eu-west-1:1:q", bad: "not a topic ARN"},
		{raw: "sqs://h/1/q?endpoint=ftp://x", bad: "Endpoint"},
		{raw: "https://sqs.eu-west-1.amazonaws.com/1/q", bad: "want sqs://"},
	} {
		got, err := sqssink.ParseURL(tc.raw)
		switch {
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("ParseURL(%q) = %+v, %v; want an error with %q", tc.raw, got, err, tc.bad)
		case tc.bad == "" && err != nil:
			t.Errorf("ParseURL(%q): %v", tc.raw, err)
		case tc.bad == "" && got != tc.want:
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.raw, got, tc.want)
		}
		if tc.bad != "" && err != nil && !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("ParseURL(%q): %v is not outbox.ErrInvalid", tc.raw, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   sqssink.Config
		field string
	}{
		{sqssink.Config{}, "sqssink.Config.QueueURL"},
		{sqssink.Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/q", TopicARN: "arn:aws:sns:eu-west-1:1:t"}, "sqssink.Config.TopicARN"},
		{sqssink.Config{QueueURL: "orders"}, "sqssink.Config.QueueURL"},
		{sqssink.Config{TopicARN: "arn:aws:sns:eu-west-1:1:t", MaxBatchBytes: -1}, "sqssink.Config.MaxBatchBytes"},
	} {
		var fe *outbox.FieldError
		if err := tc.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want a FieldError naming %s", tc.cfg, err, tc.field)
		}
	}
	// No region anywhere: New says so.
	_, err := sqssink.New(aws.Config{}, sqssink.Config{QueueURL: "http://127.0.0.1:4566/1/q"})
	var fe *outbox.FieldError
	if !errors.As(err, &fe) || fe.Field != "sqssink.Config.Region" {
		t.Errorf("New without a region: %v", err)
	}
	// The region comes from the queue URL or topic ARN.
	for _, cfg := range []sqssink.Config{
		{QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/q"},
		{QueueURL: "https://eu-west-1.queue.amazonaws.com/1/q"},
		{TopicARN: "arn:aws:sns:eu-west-1:1:t"},
	} {
		if _, err := sqssink.New(aws.Config{}, cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestMessageGroup(t *testing.T) {
	t.Parallel()
	e := newEvent("entity-1", "")
	if g := sqssink.MessageGroup(e); g != "entity-1" {
		t.Errorf("no ordering key: group %q, want the entity ID", g)
	}
	e.OrderingKey = "customer/42"
	if g := sqssink.MessageGroup(e); g != "customer/42" {
		t.Errorf("group %q, want the ordering key", g)
	}
	for _, key := range []string{"with space", strings.Repeat("k", 129), "ключ"} {
		e.OrderingKey = key
		g := sqssink.MessageGroup(e)
		if !strings.HasPrefix(g, "sha256-") || len(g) > 128 || g != sqssink.MessageGroup(e) {
			t.Errorf("key %q: group %q, want a stable sha256- form within 128 characters", key, g)
		}
	}
}
