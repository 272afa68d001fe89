package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/kafkainbox"
	"github.com/fitiq/outbox/inbox/redisinbox"
	"github.com/fitiq/outbox/sink/redissink"
)

func enqueueBrokerEvents(t *testing.T, s outbox.Store, n int) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	var events []*outbox.Event
	for i := range n {
		e := outbox.NewEvent("order.created", fmt.Sprintf("order-%d", i), "u1")
		events = append(events, e)
	}
	if err := s.Enqueue(context.Background(), time.Now(), events...); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		ids[e.ID] = true
	}
	return ids
}

// relay --once to a three-broker cluster named by a kafka:// URL: every event lands in
// the topic of --subject, once.
func TestRelayToKafka(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "relay-orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := sqliteBackend(t)
	ids := enqueueBrokerEvents(t, migrated(t, b), 50)
	sinkURL := "kafka://" + strings.Join(c.ListenAddrs(), ",") + "/?client_id=relay-test"
	r := runEnv(t, Env{}, "relay", "--once", "--dsn", b.dsn, "--sink", sinkURL, "--subject", "relay-orders", "--batch-size", "20")
	if r.code != 0 || !strings.Contains(r.stdout, "0 pending, 0 retrying, 0 given up, 50 completed") {
		t.Fatalf("relay: %v", r)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("relay-orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "relay-orders")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	seen := map[string]int{}
	for read := int64(0); read < total; {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", read, total)
		}
		for _, rec := range f.Records() {
			seen[kafkainbox.Message{Record: rec}.EventID()]++
			read++
		}
	}
	if len(seen) != len(ids) || total != int64(len(ids)) {
		t.Fatalf("topic holds %d records of %d events, want %d once each", total, len(seen), len(ids))
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Fatalf("event %s in the topic %d times", id, seen[id])
		}
	}
}

// relay --once to Redis, twice over the same events (the second run as if the first
// had not recorded its outcomes): each event is in its stream once.
func TestRelayToRedis(t *testing.T) {
	t.Parallel()
	u := os.Getenv("OUTBOX_REDIS_URL")
	if u == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the relay test against Redis (e.g. OUTBOX_REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	prefix := "outboxtest.relay." + uuid.NewString()[:8]
	stream := prefix + ".order.created"
	defer rdb.Del(context.Background(), stream, redissink.DedupKey(stream))

	b := sqliteBackend(t)
	store := migrated(t, b)
	ids := enqueueBrokerEvents(t, store, 30)
	args := []string{"relay", "--once", "--dsn", b.dsn, "--sink", u, "--subject", prefix + ".{type}", "--max-len", "1000", "--dedup-window", "10m"}
	if r := runEnv(t, Env{}, args...); r.code != 0 || !strings.Contains(r.stdout, "30 completed") {
		t.Fatalf("relay: %v", r)
	}
	done, err := store.List(context.Background(), outbox.Filter{Status: outbox.StatusCompleted})
	if err != nil || len(done) != 30 {
		t.Fatalf("%d completed events (%v)", len(done), err)
	}
	for _, e := range done {
		e.ResetForRetry(time.Now())
		if err := store.Update(context.Background(), time.Now(), &e); err != nil {
			t.Fatal(err)
		}
	}
	if r := runEnv(t, Env{}, args...); r.code != 0 || !strings.Contains(r.stdout, "30 completed") {
		t.Fatalf("second relay: %v", r)
	}
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range msgs {
		seen[redisinbox.Message{Values: m.Values}.EventID()]++
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Fatalf("event %s in the stream %d times (stream holds %d entries)", id, seen[id], len(msgs))
		}
	}
}

// The password of a kafka:// URL that names only the user comes from
// $OUTBOX_SINK_PASSWORD: the relay authenticates against a SASL cluster with it.
func TestRelayKafkaPasswordFromEnvironment(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "relay-orders"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "relay", "p@ss:w/rd"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := sqliteBackend(t)
	enqueueBrokerEvents(t, migrated(t, b), 5)
	env := Env{Getenv: func(k string) string {
		if k == "OUTBOX_SINK_PASSWORD" {
			return "p@ss:w/rd"
		}
		return ""
	}}
	sinkURL := "kafka://relay@" + c.ListenAddrs()[0] + "?sasl=scram-sha-512"
	r := runEnv(t, env, "relay", "--once", "--dsn", b.dsn, "--sink", sinkURL, "--subject", "relay-orders", "--handler-timeout", "5s")
	if r.code != 0 || !strings.Contains(r.stdout, "5 completed") {
		t.Fatalf("relay: %v", r)
	}
	if strings.Contains(r.stderr, "p@ss") {
		t.Fatalf("the password is in the log: %v", r)
	}
}

// Likewise for redis://user@…: a Redis of the test's own that requires a password.
func TestRelayRedisPasswordFromEnvironment(t *testing.T) {
	t.Parallel()
	if os.Getenv("OUTBOX_REDIS_URL") == "" {
		t.Skip("OUTBOX_REDIS_URL is not set: skipping the Redis tests (this one starts its own redis-server)")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("no redis-server binary: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--requirepass", "s3cr:t@x", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: "s3cr:t@x"})
	defer rdb.Close()
	for deadline := time.Now().Add(30 * time.Second); rdb.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 30s")
		}
		time.Sleep(10 * time.Millisecond) // waiting for the server to listen, not for a backoff
	}

	b := sqliteBackend(t)
	enqueueBrokerEvents(t, migrated(t, b), 5)
	env := Env{Getenv: func(k string) string {
		if k == "OUTBOX_SINK_PASSWORD" {
			return "s3cr:t@x"
		}
		return ""
	}}
	sinkURL := fmt.Sprintf("redis://default@127.0.0.1:%d/0", port)
	r := runEnv(t, env, "relay", "--once", "--dsn", b.dsn, "--sink", sinkURL, "--subject", "orders")
	if r.code != 0 || !strings.Contains(r.stdout, "5 completed") {
		t.Fatalf("relay: %v", r)
	}
	if strings.Contains(r.stderr, "s3cr") {
		t.Fatalf("the password is in the log: %v", r)
	}
	if n := rdb.XLen(context.Background(), "orders").Val(); n != 5 {
		t.Fatalf("stream holds %d entries, want 5", n)
	}
}

func TestRelayBrokerSinkBadInput(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	migrated(t, b)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"kafka unknown parameter", []string{"--sink", "kafka://k1:9092/?acks=1"}, `unknown parameter "acks"`},
		{"kafka sasl without user", []string{"--sink", "kafka://k1/?sasl=plain"}, "needs user:password@"},
		{"kafka topic with a slash", []string{"--sink", "kafka://k1", "--subject", "a/{type}"}, "contains '/'"},
		{"kafka wrong password not echoed", []string{"--sink", "kafka://u:hunter2@k1/?sasl=md5"}, `sasl="md5"`},
		{"redis negative max-len", []string{"--sink", "redis://127.0.0.1:1/0", "--max-len", "-1"}, "--max-len must not be negative"},
		{"redis zero dedup window", []string{"--sink", "redis://127.0.0.1:1/0", "--dedup-window", "0s"}, "--dedup-window must be positive"},
		{"redis bad database", []string{"--sink", "redis://127.0.0.1:1/zero"}, "invalid database number"},
		{"redis bad stream template", []string{"--sink", "redis://127.0.0.1:1/0", "--subject", "s.{kind}"}, "unknown placeholder {kind}"},
		{"redis without //", []string{"--sink", "redis:127.0.0.2:16379"}, `has no "//" after "redis:"`},
		{"redis negative database", []string{"--sink", "redis://127.0.0.1:1/-1"}, "database -1 is negative"},
		{"redis upper case, no host", []string{"--sink", "REDIS:///0"}, "names no host"},
		{"kafka without //", []string{"--sink", "kafka:k1:9092"}, "must start with kafka://"},
		{"kafka unclosed bracket", []string{"--sink", "kafka://[::1"}, "[IPv6]"},
		{"kafka upper case", []string{"--sink", "KAFKA://k1:9092/?acks=1"}, `unknown parameter "acks"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEnv(t, Env{}, append([]string{"relay", "--dsn", b.dsn}, tt.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("want exit 2 and one line about %q; got %v", tt.want, r)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Fatalf("the password is on stderr: %v", r)
			}
		})
	}
}

func TestRelayHelpNamesBrokerSinks(t *testing.T) {
	t.Parallel()
	r := runEnv(t, Env{}, "relay", "--help")
	for _, want := range []string{"kafka://", "redis://", "--max-len", "--dedup-window", "sasl=plain|scram-sha-256|scram-sha-512", "tls_ca="} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("relay --help does not mention %q", want)
		}
	}
}
