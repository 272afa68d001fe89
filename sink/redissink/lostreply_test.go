package redissink_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/redissink"
)

// replyCutter is a TCP proxy to Redis that, while cut is set, passes requests on and
// drops the connection when the first reply comes back: Redis has run the command, the
// client never hears so.
type replyCutter struct {
	ln  net.Listener
	cut atomic.Bool
	wg  sync.WaitGroup
}

func newReplyCutter(t *testing.T, target string) *replyCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyCutter{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c, target) })
		}
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *replyCutter) serve(client net.Conn, target string) {
	defer client.Close()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(up, client)
		up.Close() // the client went away: stop waiting for Redis
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 && p.cut.Load() {
			return // the reply is lost with the connection
		}
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// The acknowledgement of a batch is lost after Redis has added (some of) it: the sink
// reports the batch failed, the outbox delivers it again, and Redis refuses every
// event it already has. Each event ends up in the stream once.
func TestLostRepliesThenRedeliveryAddsNoDuplicate(t *testing.T) {
	t.Parallel()
	direct := redisClient(t)
	p := prefix(t, direct)
	proxy := newReplyCutter(t, direct.Options().Addr)
	opts, err := redis.ParseURL(os.Getenv("OUTBOX_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	// One connection, no silent resend by the client.
	opts.Addr, opts.MaxRetries, opts.PoolSize = proxy.ln.Addr().String(), -1, 1
	viaProxy := redis.NewClient(opts)
	defer viaProxy.Close()
	// The connection's handshake gets through; the batch's replies will not.
	if err := viaProxy.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, viaProxy, redissink.Config{Stream: p + ".{type}"})
	stream := p + ".a"

	events := make([]outbox.Event, 200)
	ids := map[string]bool{}
	for i := range events {
		events[i] = event("a", fmt.Sprint(i))
		ids[events[i].ID] = true
	}
	proxy.cut.Store(true)
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err == nil || outbox.IsPermanent(err) {
			t.Fatalf("event %d with its reply cut: %v; want a retryable error", i, err)
		}
	}
	landed := direct.XLen(context.Background(), stream).Val()
	if landed == 0 {
		t.Fatal("nothing reached Redis before the cut: the test did not lose a reply")
	}

	proxy.cut.Store(false)
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("redelivery of event %d: %v", i, err)
		}
	}
	t.Logf("%d of %d events had landed although the sink reported them failed", landed, len(events))
	checkExactlyOnce(t, readAll(t, direct, stream), ids)
}
