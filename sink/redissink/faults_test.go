package redissink_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/redissink"
)

// ownRedis starts a redis-server of the test's own, without persistence, with extra
// arguments, and returns its address. It skips the test when there is no binary.
func ownRedis(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("OUTBOX_REDIS_SERVER")
	if bin == "" {
		bin = "redis-server"
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("no redis-server binary (install redis-server or set OUTBOX_REDIS_SERVER): %v", err)
	}
	port := outboxtest.ServerPort(t)
	cmd := exec.Command(bin, append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	outboxtest.AwaitLine(t, out, "Ready to accept connections", 30*time.Second)
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func client(t *testing.T, opts *redis.Options) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// wantFault fails the test unless err is a DestinationError with reason and target:
// delivery held, no attempt spent.
func wantFault(t *testing.T, err error, reason, target string) {
	t.Helper()
	var de *outbox.DestinationError
	if !errors.As(err, &de) || de.Reason != reason || de.Target != target || de.Suspected || !outbox.IsUnavailable(err) {
		t.Fatalf("got %v; want a destination fault %q for target %q", err, reason, target)
	}
}

func batchOf(n int, typ string) []outbox.Event {
	events := make([]outbox.Event, n)
	for i := range events {
		events[i] = event(typ, fmt.Sprint(i))
	}
	return events
}

// A Redis that requires a password, reached with a wrong one or none: every event of
// the batch fails as "credentials rejected" (held, not given up), and the stream has
// gained nothing. The same sink delivers once the password is right.
func TestRefusedCredentialsAreNeverReportedDelivered(t *testing.T) {
	t.Parallel()
	addr := ownRedis(t, "--requirepass", "s3cret")
	good := client(t, &redis.Options{Addr: addr, Password: "s3cret"})
	for _, tt := range []struct{ name, password, code string }{
		{"wrong password", "wrong", "WRONGPASS"},
		// Redis refuses the first script call for its length ("ERR Protocol error:
		// unauthenticated multibulk length") and drops the connection; the PING
		// probe then hears NOAUTH.
		{"no password", "", "NOAUTH|unauthenticated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(t, client(t, &redis.Options{Addr: addr, Password: tt.password, MaxRetries: -1}), redissink.Config{Stream: "s.{type}"})
			for i, err := range s.HandleBatch(context.Background(), batchOf(5, "a")) {
				wantFault(t, err, outbox.ReasonCredentials, "")
				if !slices.ContainsFunc(strings.Split(tt.code, "|"), func(c string) bool { return strings.Contains(err.Error(), c) }) {
					t.Fatalf("event %d: %v; want Redis's %s", i, err, tt.code)
				}
			}
			if n := good.XLen(context.Background(), "s.a").Val(); n != 0 {
				t.Fatalf("the stream holds %d entries; want none", n)
			}
		})
	}
	s := newSink(t, good, redissink.Config{Stream: "s.{type}"})
	for i, err := range s.HandleBatch(context.Background(), batchOf(5, "a")) {
		if err != nil {
			t.Fatalf("event %d with the right password: %v", i, err)
		}
	}
}

// A database index the server does not have: the connection's SELECT fails, every
// event fails as a fault of the destination, and nothing is reported delivered.
func TestMissingDatabaseIsNeverReportedDelivered(t *testing.T) {
	t.Parallel()
	shared := redisClient(t)
	dbs := 16
	if v, err := shared.ConfigGet(context.Background(), "databases").Result(); err == nil {
		fmt.Sscan(v["databases"], &dbs)
	}
	opts := *shared.Options()
	opts.DB, opts.MaxRetries = dbs, -1 // one past the last
	s := newSink(t, client(t, &opts), redissink.Config{Stream: prefix(t, shared) + ".{type}"})
	for _, err := range s.HandleBatch(context.Background(), batchOf(5, "a")) {
		wantFault(t, err, redissink.ReasonNoDatabase, "")
	}
}

// A user whose ACL does not cover a stream's key holds that stream's events only; the
// batch's other events are added.
func TestStreamNotPermittedHoldsThatStreamOnly(t *testing.T) {
	t.Parallel()
	addr := ownRedis(t)
	admin := client(t, &redis.Options{Addr: addr})
	if err := admin.Do(context.Background(), "ACL", "SETUSER", "relay", "on", ">pw", "~allowed.*", "~{allowed.*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, client(t, &redis.Options{Addr: addr, Username: "relay", Password: "pw"}), redissink.Config{Stream: "{type}.s"})
	errs := s.HandleBatch(context.Background(), []outbox.Event{event("allowed", "1"), event("denied", "2"), event("allowed", "3")})
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("events to the permitted stream: %v, %v", errs[0], errs[2])
	}
	wantFault(t, errs[1], outbox.ReasonCredentials, "denied.s")
	if n := admin.XLen(context.Background(), "allowed.s").Val(); n != 2 {
		t.Fatalf("the permitted stream holds %d entries; want 2", n)
	}
}

// Nothing listens: unavailable at once. A listener that takes the connection and
// never answers (blackholed): unavailable too, once the PING probe got no answer
// either, rather than a failure that spends the events' attempts.
func TestUnreachableRedisIsUnavailable(t *testing.T) {
	t.Parallel()
	refused := newSink(t, client(t, &redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", outboxtest.ServerPort(t)), MaxRetries: -1}), redissink.Config{})
	for _, err := range refused.HandleBatch(context.Background(), batchOf(3, "a")) {
		wantFault(t, err, outbox.ReasonUnreachable, "")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	opts := &redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ReadTimeout: 200 * time.Millisecond}
	silent := newSink(t, client(t, opts), redissink.Config{ProbeTimeout: 200 * time.Millisecond})
	for _, err := range silent.HandleBatch(context.Background(), batchOf(3, "a")) {
		wantFault(t, err, outbox.ReasonUnreachable, "")
	}
}

// A server that answers every command with +OK (not the add script's reply: an entry
// ID or 0) gets no event reported delivered: it is retried.
func TestUnexpectedRepliesAreNotDeliveries(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					// A command: *<n>, then n bulk strings $<len> <data>.
					var n int
					if _, err := fmt.Fscanf(r, "*%d\r\n", &n); err != nil {
						return
					}
					var name string
					for i := range n {
						var size int
						if _, err := fmt.Fscanf(r, "$%d\r\n", &size); err != nil {
							return
						}
						data := make([]byte, size+2)
						if _, err := io.ReadFull(r, data); err != nil {
							return
						}
						if i == 0 {
							name = strings.ToUpper(string(data[:size]))
						}
					}
					if name == "HELLO" { // as a Redis before 6: the client goes on in RESP2
						if _, err := c.Write([]byte("-ERR unknown command 'HELLO'\r\n")); err != nil {
							return
						}
						continue
					}
					if _, err := c.Write([]byte("+OK\r\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	s := newSink(t, client(t, &redis.Options{Addr: ln.Addr().String(), MaxRetries: -1}), redissink.Config{})
	for i, err := range s.HandleBatch(context.Background(), batchOf(3, "a")) {
		if err == nil || outbox.IsPermanent(err) {
			t.Fatalf("event %d: %v; want a retryable failure", i, err)
		}
	}
}
