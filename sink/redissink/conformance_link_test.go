package redissink_test

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replyLink is a TCP relay between a sinktest.Proxy and Redis that can hold back
// Redis's replies, or replace the replies to the add script (EVALSHA) with hostile
// ones: the request still reaches Redis, which runs it. Other commands (the
// connection's handshake, the sink's PING probe) get Redis's own replies. It sits
// behind the proxy, so that a proxy fault (a restart, a cut) drops what the link
// still holds, as a network would.
type replyLink struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // of what Redis sends, for chunks read from now on
	hostile  atomic.Bool  // replies to EVALSHA replaced by hostileReplies
	replaced atomic.Int64 // writes whose replies were replaced

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startReplyLink starts a link to upstream, passing everything at once, and closes it
// when the test ends.
func startReplyLink(t testing.TB, upstream string) *replyLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &replyLink{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *replyLink) Addr() string { return l.ln.Addr().String() }

// SetDelay delays what Redis sends from now on by d; chunks already waiting keep
// their time, and nothing overtakes them.
func (l *replyLink) SetDelay(d time.Duration) { l.delay.Store(int64(d)) }

// SetHostile makes the link answer the add script with hostileReplies until
// SetHostile(false).
func (l *replyLink) SetHostile(on bool) { l.hostile.Store(on) }

// hostileReplies answer a pipeline of add scripts in Redis's place, one reply per
// command: an error whose text holds NUL bytes, control sequences, markup and invalid
// UTF-8; an error of half a megabyte; a status that is not the script's reply; a nil;
// then bytes that are not RESP at all.
var hostileReplies = []byte("-ERR \x00\xff\xfe\x1b[31m<script>alert(1)</script>\xc3\x28\r\n" +
	"-" + strings.Repeat("\xff\xfe\x1b[31m<b>junk</b>\xc3\x28 ", 512<<10/24) + "\r\n" +
	"+OK\r\n" +
	"_\r\n" +
	"\x00\xff\xfe NOT RESP \x1b[31m\r\n")

func (l *replyLink) close() {
	l.mu.Lock()
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *replyLink) track(conns ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	for _, c := range conns {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *replyLink) untrack(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		delete(l.conns, c)
	}
}

func (l *replyLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.handle(c)
		}()
	}
}

func (l *replyLink) handle(c net.Conn) {
	up, err := net.DialTimeout("tcp", l.upstream, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !l.track(c, up) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	defer l.untrack(c, up)
	done := make(chan struct{})
	closeBoth := sync.OnceFunc(func() {
		_ = c.Close()
		_ = up.Close()
		close(done)
	})
	defer closeBoth()

	// script is the number of the client's last write when it held the add script,
	// else 0: go-redis waits for the replies to one write (a command, a pipeline)
	// before it writes again.
	var writes, script atomic.Int64
	l.wg.Add(2)
	go func() { // client → Redis, as it comes
		defer l.wg.Done()
		defer closeBoth()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				w := writes.Add(1)
				if !bytes.Contains(bytes.ToLower(buf[:n]), []byte("evalsha")) {
					w = 0
				}
				script.Store(w)
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 4096)
	go func() { // Redis → queue; Redis closing lets what is queued go first
		defer l.wg.Done()
		defer close(q)
		buf := make([]byte, 32<<10)
		var replaced int64 // the write whose replies were replaced
		for {
			n, err := up.Read(buf)
			if n > 0 {
				ch := chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(time.Duration(l.delay.Load()))}
				switch w := script.Load(); {
				case !l.hostile.Load() || w == 0:
				case replaced == w:
					ch.b = nil // the rest of Redis's replies to the write
				default:
					ch.b, replaced = hostileReplies, w
					l.replaced.Add(1)
				}
				select {
				case q <- ch:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q { // queue → client, each chunk when due
		if wait := time.Until(ch.due); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-done:
				timer.Stop()
				return
			}
		}
		if len(ch.b) == 0 {
			continue
		}
		if _, err := c.Write(ch.b); err != nil {
			return
		}
	}
}
