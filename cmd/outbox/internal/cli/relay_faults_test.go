package cli

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
)

// faultyDestination is one destination-wide fault an operator makes and then fixes:
// the relay's sink URL (and token) before and after the fix, and what the destination
// holds.
type faultyDestination struct {
	broken, fixed []string // relay arguments: --sink and the like
	fix           func(t *testing.T)
	received      func(t *testing.T) map[string]int // event ID → copies held
	cause         string                            // what the relay must name
}

// A relay given a wrong URL, a revoked token, a wrong password or a missing topic
// delivers nothing and gives nothing up, names the cause, and exits non-zero; once the
// operator fixes it, the next run delivers every event once.
func TestRelayHoldsOnADestinationFaultAndDeliversOnceFixed(t *testing.T) {
	t.Parallel()
	cases := map[string]func(t *testing.T) faultyDestination{
		"http: a typo in the path":      httpWrongPath,
		"http: a revoked token":         httpRevokedToken,
		"redis: a wrong password":       redisWrongPassword,
		"kafka: the topic is missing":   kafkaMissingTopic,
		"http: unreachable, traced too": httpUnreachableTraced,
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := setup(t)
			b := sqliteBackend(t)
			ids := enqueueBrokerEvents(t, migrated(t, b), 20)
			args := append([]string{"relay", "--once", "--dsn", b.dsn, "--log-level", "error"}, d.broken...)
			r := runEnv(t, Env{}, args...)
			if r.code == 0 || !strings.Contains(r.stdout, "0 retrying, 0 given up, 0 completed") || !strings.Contains(r.stdout, d.cause) {
				t.Fatalf("relay against the broken destination: %v\nwant a non-zero exit, nothing completed or given up, and the cause %q named", r, d.cause)
			}
			if got := d.received(t); len(got) != 0 {
				t.Fatalf("the broken destination holds %d events, want none", len(got))
			}

			d.fix(t)
			args = append([]string{"relay", "--once", "--dsn", b.dsn, "--log-level", "error"}, d.fixed...)
			if r := runEnv(t, Env{}, args...); r.code != 0 || !strings.Contains(r.stdout, "0 given up, 20 completed") {
				t.Fatalf("relay once fixed: %v", r)
			}
			got := d.received(t)
			for id := range ids {
				if got[id] != 1 {
					t.Errorf("event %s held %d times by the destination, want once", id, got[id])
				}
			}
		})
	}
}

// httpReceiver takes POSTs at /events with the bearer token "good".
type httpReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys map[string]int
}

func newHTTPReceiver(t *testing.T) *httpReceiver {
	h := &httpReceiver{keys: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/events":
			http.NotFound(w, r)
		case r.Header.Get("Authorization") != "Bearer good":
			http.Error(w, "token revoked", http.StatusUnauthorized)
		default:
			h.mu.Lock()
			h.keys[r.Header.Get("Idempotency-Key")]++
			h.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *httpReceiver) received(*testing.T) map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.keys)
}

func httpWrongPath(t *testing.T) faultyDestination {
	h := newHTTPReceiver(t)
	return faultyDestination{
		broken:   []string{"--sink", h.srv.URL + "/evnets", "--bearer-token", "good"},
		fixed:    []string{"--sink", h.srv.URL + "/events", "--bearer-token", "good"},
		fix:      func(*testing.T) {},
		received: h.received,
		cause:    "delivery held: endpoint not found (HTTP 404)",
	}
}

func httpRevokedToken(t *testing.T) faultyDestination {
	h := newHTTPReceiver(t)
	return faultyDestination{
		broken:   []string{"--sink", h.srv.URL + "/events", "--bearer-token", "revoked"},
		fixed:    []string{"--sink", h.srv.URL + "/events", "--bearer-token", "good"},
		fix:      func(*testing.T) {},
		received: h.received,
		cause:    "delivery held: " + outbox.ReasonCredentials,
	}
}

// httpUnreachableTraced relays with tracing on to a port nothing listens on: the
// tracing observer must not hide the fault from the relay's own count.
func httpUnreachableTraced(t *testing.T) faultyDestination {
	h := newHTTPReceiver(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/events"
	ln.Close()
	return faultyDestination{
		broken:   []string{"--sink", closed, "--otel", "--bearer-token", "good"},
		fixed:    []string{"--sink", h.srv.URL + "/events", "--bearer-token", "good"},
		fix:      func(*testing.T) {},
		received: h.received,
		cause:    "delivery held: " + outbox.ReasonUnreachable,
	}
}

// redisWrongPassword starts a redis-server of its own that requires a password.
func redisWrongPassword(t *testing.T) faultyDestination {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: skipping the relay against a Redis that requires a password")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--requirepass", "right", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: "right"})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for rdb.Ping(ctx).Err() != nil {
		if ctx.Err() != nil {
			t.Fatalf("redis-server on %s did not answer", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return faultyDestination{
		broken: []string{"--sink", "redis://:wrong@" + addr + "/0", "--subject", "orders"},
		fixed:  []string{"--sink", "redis://:right@" + addr + "/0", "--subject", "orders"},
		fix:    func(*testing.T) {},
		received: func(t *testing.T) map[string]int {
			msgs, err := rdb.XRange(context.Background(), "orders", "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, m := range msgs {
				got[fmt.Sprint(m.Values["id"])]++
			}
			return got
		},
		cause: "delivery held: " + outbox.ReasonCredentials,
	}
}

// kafkaMissingTopic relays to a topic that does not exist until the fix creates it.
func kafkaMissingTopic(t *testing.T) faultyDestination {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	sinkURL := "kafka://" + strings.Join(c.ListenAddrs(), ",") + "/"
	return faultyDestination{
		broken: []string{"--sink", sinkURL, "--subject", "orders"},
		fixed:  []string{"--sink", sinkURL, "--subject", "orders"},
		fix: func(t *testing.T) {
			if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "orders"); err != nil {
				t.Fatal(err)
			}
		},
		received: func(t *testing.T) map[string]int {
			return kafkaIDs(t, c.ListenAddrs(), "orders")
		},
		cause: "target orders held: " + outbox.ReasonTargetMissing,
	}
}

// kafkaIDs reads every record of topic (none when it does not exist) by event ID.
func kafkaIDs(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]int{}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return got // no such topic: nothing there
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	for read := int64(0); read < total; {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", read, total)
		}
		for _, rec := range f.Records() {
			for _, h := range rec.Headers {
				if h.Key == "Outbox-Id" {
					got[string(h.Value)]++
				}
			}
			read++
		}
	}
	return got
}
