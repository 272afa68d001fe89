package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/cloudevents/sdk-go/v2/binding"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink/pubsubsink"
)

// relay --once --envelope cloudevents-binary to HTTP and --envelope cloudevents to
// Pub/Sub (pstest), the same events: the CloudEvents Go SDK reads every request and
// message as its event (HTTP with the SDK's own HTTP binding), each event once, a
// key's events in order on Pub/Sub, with the --cloudevents-source given. Not
// parallel: it sets PUBSUB_EMULATOR_HOST.
func TestRelayCloudEventsEnvelope(t *testing.T) {
	srv := pstest.NewServer()
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin, err := pubsub.NewClient(context.Background(), "relay-ce", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	if _, err := admin.TopicAdminClient.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/relay-ce/topics/orders"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)

	type request struct {
		req  *http.Request
		body []byte
	}
	var (
		mu   sync.Mutex
		reqs []request
	)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, request{r, body})
		mu.Unlock()
	}))
	t.Cleanup(web.Close)

	// Two stores with the same events (the same IDs): one relay each.
	var events []*outbox.Event
	for i := range 12 {
		e := outbox.NewEvent("order.updated", fmt.Sprintf("order-%d", i%3), "u1")
		e.OrderingKey = e.EntityID
		e.Payload = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		e.Metadata = map[string]string{"app": "checkout"}
		events = append(events, e)
	}
	byID := map[string]outbox.Event{}
	run := func(args ...string) {
		b := sqliteBackend(t)
		s := migrated(t, b)
		for _, e := range events { // one at a time: a key's events in sequence order
			c := *e
			if err := s.Enqueue(t.Context(), time.Now(), &c); err != nil {
				t.Fatal(err)
			}
			e.ID = c.ID
		}
		r := runEnv(t, Env{}, append([]string{"relay", "--once", "--dsn", b.dsn, "--batch-size", "5"}, args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "0 pending, 0 retrying, 0 given up, 12 completed") {
			t.Fatalf("relay %v: %v", args, r)
		}
		for _, e := range events {
			got, err := s.Get(t.Context(), e.ID)
			if err != nil {
				t.Fatal(err)
			}
			byID[e.ID] = got
		}
	}

	run("--sink", web.URL, "--envelope", "cloudevents-binary", "--cloudevents-source", "https://shop.example.com/orders")
	seen := map[string]int{} // event ID and destination
	mu.Lock()
	got := reqs
	mu.Unlock()
	for _, g := range got {
		ev, mode, err := cetest.FromHTTP(g.req, g.body)
		if err != nil || mode != binding.EncodingBinary {
			t.Fatalf("the SDK reads %v (mode %v): %v", g.req.Header, mode, err)
		}
		e, ok := byID[ev.ID()]
		if !ok {
			t.Fatalf("an event that was not sent: %s", ev)
		}
		seen[e.ID+" http"]++
		cetest.Check(t, ev, e, "https://shop.example.com/orders")
	}

	run("--sink", "pubsub://relay-ce/orders", "--envelope", "cloudevents")
	byKey := map[string][]string{}
	for _, m := range srv.Messages() {
		h := map[string]any{}
		for k, v := range m.Attributes {
			h[k] = v
		}
		ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: pubsubsink.CloudEventsPrefix, ContentType: pubsubsink.AttributeContentType, Body: m.Data})
		if err != nil || mode != binding.EncodingStructured {
			t.Fatalf("the SDK reads %v (mode %v): %v", m.Attributes, mode, err)
		}
		e, ok := byID[ev.ID()]
		if !ok {
			t.Fatalf("an event that was not sent: %s", ev)
		}
		seen[e.ID+" pubsub"]++
		cetest.Check(t, ev, e, "")
		byKey[m.OrderingKey] = append(byKey[m.OrderingKey], ev.ID())
	}
	if len(seen) != 2*len(events) {
		t.Errorf("%d events delivered, want %d", len(seen), 2*len(events))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times, want once", id, n)
		}
	}
	for key, ids := range byKey {
		var want []string
		for _, m := range srv.Messages() {
			if m.OrderingKey == key {
				want = append(want, m.Attributes[pubsubsink.AttributeID])
			}
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("key %s published as %v, want %v", key, ids, want)
		}
	}
}

// A wrong --envelope or --cloudevents-source exits 2 naming the flag, before the
// store or the sink is opened.
func TestRelayEnvelopeFlags(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	migrated(t, b)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--envelope", "json"}, `--envelope: unknown envelope "json"`},
		{[]string{"--cloudevents-source", "/orders"}, "--cloudevents-source is for --envelope cloudevents or cloudevents-binary"},
		{[]string{"--envelope", "cloudevents", "--cloudevents-source", "my orders"}, "--cloudevents-source:"},
	} {
		r := runEnv(t, Env{}, append([]string{"relay", "--once", "--dsn", b.dsn, "--sink", "http://127.0.0.1:1/"}, tt.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("relay %v: %v; want exit 2 saying %q", tt.args, r, tt.want)
		}
	}
	r := runEnv(t, Env{}, "relay", "--help")
	if !strings.Contains(r.stdout+r.stderr, "-envelope") || !strings.Contains(r.stdout+r.stderr, "-cloudevents-source") {
		t.Errorf("relay --help does not list --envelope and --cloudevents-source: %v", r)
	}
}
