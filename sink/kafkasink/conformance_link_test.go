package kafkasink_test

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// produceLink is a TCP relay between a sinktest.Proxy and a kfake broker that can
// hold back or garble the broker's answers to produce requests, and only those:
// franz-go produces on a connection of its own, which the link recognises by the
// first Produce request it carries. Metadata and the sink's probe (ApiVersions)
// pass at once, so a broker that writes a record and acknowledges it late is still
// seen answering. It sits behind the proxy, so that a proxy fault (a restart, a cut)
// drops what the link still holds, as a network would.
type produceLink struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // of produce answers read from now on
	hostile  atomic.Bool  // produce answers replaced by hostileFrames, in turn
	answers  atomic.Int64 // hostile answers given

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startProduceLink starts a link to upstream, passing everything at once, and closes it
// when the test ends.
func startProduceLink(t testing.TB, upstream string) *produceLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &produceLink{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *produceLink) Addr() string { return l.ln.Addr().String() }

// SetDelay delays the produce answers read from now on by d; those already waiting
// keep their time, and nothing overtakes them.
func (l *produceLink) SetDelay(d time.Duration) { l.delay.Store(int64(d)) }

// SetHostile makes the link answer produce requests with hostileFrames (the broker
// still gets, and writes, each request) until SetHostile(false).
func (l *produceLink) SetHostile(on bool) { l.hostile.Store(on) }

// hostileFrames answer a produce request in the broker's place: a frame of NUL bytes,
// invalid UTF-8 and markup; a frame claiming 2 GB; and megabytes of junk with no frame
// at all.
var hostileFrames = [][]byte{
	kafkaFrame("\x00\x00\x00\x00\x00\xff\xfe NOT KAFKA \x1b[31m<script>alert(1)</script>\xc3\x28"),
	[]byte("\x7f\xff\xff\xff\x00\xff\xfe"),
	[]byte(strings.Repeat("\xff\xfe\x00\x1b[31m<script>", 4<<20/16)),
}

// kafkaFrame is body behind its length, as the broker frames an answer.
func kafkaFrame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func (l *produceLink) close() {
	l.mu.Lock()
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *produceLink) track(conns ...net.Conn) bool {
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

func (l *produceLink) untrack(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		delete(l.conns, c)
	}
}

func (l *produceLink) serve() {
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

func (l *produceLink) handle(c net.Conn) {
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

	var produce atomic.Bool // the connection has carried a Produce request
	l.wg.Add(2)
	go func() { // client → broker, request by request
		defer l.wg.Done()
		defer closeBoth()
		var head [6]byte // size, API key
		for {
			if _, err := io.ReadFull(c, head[:]); err != nil {
				return
			}
			size := int(binary.BigEndian.Uint32(head[:4]))
			if size < 2 || size > 64<<20 {
				return
			}
			if binary.BigEndian.Uint16(head[4:]) == 0 { // Produce
				produce.Store(true) // before the broker can answer it
			}
			if _, err := up.Write(head[:]); err != nil {
				return
			}
			if _, err := io.CopyN(up, c, int64(size-2)); err != nil {
				return
			}
		}
	}()
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 4096)
	go func() { // broker → queue; the broker closing lets what is queued go first
		defer l.wg.Done()
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				ch := chunk{b: append([]byte(nil), buf[:n]...)}
				if produce.Load() {
					ch.due = time.Now().Add(time.Duration(l.delay.Load()))
					if l.hostile.Load() {
						ch.b = hostileFrames[int(l.answers.Add(1)-1)%len(hostileFrames)]
					}
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
		if _, err := c.Write(ch.b); err != nil {
			return
		}
	}
}
