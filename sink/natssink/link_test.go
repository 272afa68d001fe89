package natssink_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// link is a TCP relay to upstream that passes on what the upstream sends only after a
// delay: a slow path for the server's acknowledgements, which sinktest.Proxy does not
// have. It goes between the proxy and the server, so that a proxy fault (a restart)
// drops what the link still holds, as a network would.
type link struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // of what the upstream sends, for chunks read from now on

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startLink starts a link to upstream, with no delay, and closes it when the test ends.
func startLink(t testing.TB, upstream string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *link) Addr() string { return l.ln.Addr().String() }

// SetDelay delays what the upstream sends from now on by d. Chunks already waiting
// keep their time, and nothing overtakes them.
func (l *link) SetDelay(d time.Duration) { l.delay.Store(int64(d)) }

func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// track registers conns to be closed with the link; false when it is closed already.
func (l *link) track(conns ...net.Conn) bool {
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

func (l *link) untrack(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		delete(l.conns, c)
	}
}

func (l *link) serve() {
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

func (l *link) handle(c net.Conn) {
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

	l.wg.Add(2)
	go func() { // client → upstream, as it comes; the client closing ends the connection
		defer l.wg.Done()
		_, _ = io.Copy(up, c)
		closeBoth()
	}()
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 4096)
	go func() { // upstream → queue; the upstream closing lets what is queued go first
		defer l.wg.Done()
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				ch := chunk{append([]byte(nil), buf[:n]...), time.Now().Add(time.Duration(l.delay.Load()))}
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
