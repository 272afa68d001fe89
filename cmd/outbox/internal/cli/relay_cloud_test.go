package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/pubsubsink"
)

// relay --once to Pub/Sub (pstest, found by PUBSUB_EMULATOR_HOST as the client library
// has it): every event lands once, with its ordering key, each key's events in order.
// Not parallel: it sets the environment.
func TestRelayToPubSub(t *testing.T) {
	srv := pstest.NewServer()
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin, err := pubsub.NewClient(context.Background(), "relay-test", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	if _, err := admin.TopicAdminClient.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/relay-test/topics/orders"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)

	b := sqliteBackend(t)
	s := migrated(t, b)
	var events []*outbox.Event
	for i := range 30 {
		e := outbox.NewEvent("order.updated", fmt.Sprintf("order-%d", i%3), "u1")
		e.OrderingKey = e.EntityID
		events = append(events, e)
	}
	for _, e := range events { // one at a time: a key's events in sequence order
		if err := s.Enqueue(t.Context(), time.Now(), e); err != nil {
			t.Fatal(err)
		}
	}
	r := runEnv(t, Env{}, "relay", "--once", "--dsn", b.dsn, "--sink", "pubsub://relay-test/orders", "--batch-size", "10")
	if r.code != 0 || !strings.Contains(r.stdout, "0 pending, 0 retrying, 0 given up, 30 completed") {
		t.Fatalf("relay: %v", r)
	}
	seen := map[string]int{}
	byKey := map[string][]string{}
	for _, m := range srv.Messages() {
		id := m.Attributes[pubsubsink.AttributeID]
		seen[id]++
		byKey[m.OrderingKey] = append(byKey[m.OrderingKey], id)
	}
	for _, e := range events {
		if seen[e.ID] != 1 {
			t.Errorf("event %s published %d times", e.ID, seen[e.ID])
		}
	}
	for key, ids := range byKey {
		var want []string
		for _, e := range events {
			if e.OrderingKey == key {
				want = append(want, e.ID)
			}
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("key %s published as %v, want %v", key, ids, want)
		}
	}
}

// The cloud sinks' URLs are checked before anything is opened: a bad one exits 2
// naming what is wrong; and relay --help lists them.
func TestRelayCloudSinkURLs(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	migrated(t, b)
	for _, tc := range []struct{ url, want string }{
		{"sqs://sqs.eu-west-1.amazonaws.com/orders", "/ACCOUNT/NAME"},
		{"sns://orders", "not a topic ARN"},
		{"sns://arn:aws:sns:eu-west-1:123456789012:orders?regoin=x", `unknown parameter "regoin"`},
		{"pubsub://my-project", "pubsub://PROJECT/TOPIC"},
	} {
		r := runEnv(t, Env{}, "relay", "--once", "--dsn", b.dsn, "--sink", tc.url)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("--sink %s: want exit 2 with %q, got %v", tc.url, tc.want, r)
		}
	}
	r := runEnv(t, Env{}, "relay", "--help")
	for _, want := range []string{"sqs://HOST/ACCOUNT/QUEUE", "sns://arn:aws:sns:", "pubsub://PROJECT/TOPIC"} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("relay --help does not mention %q", want)
		}
	}
}
