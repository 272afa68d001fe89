package sinktest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Mode is what a Proxy does with the traffic it relays.
type Mode string

// The modes. A mode applies at once to the connections already open as well as to
// new ones, as a fault in the network would.
const (
	// ModePass relays both ways.
	ModePass Mode = "pass"
	// ModeRefuse closes the listening socket, so that a dial is refused
	// (ECONNREFUSED), and resets every open connection.
	ModeRefuse Mode = "refuse"
	// ModeBlackhole accepts connections and reads what comes, both ways, and delivers
	// none of it: the sink's requests are never answered. A connection that lost
	// bytes so cannot carry its protocol any more; leaving the mode closes it.
	ModeBlackhole Mode = "blackhole"
	// ModeCut relays the next chunk the client writes on each connection (for a
	// small request, the whole of it) and then closes both sides: the destination got
	// the request, the client never gets the answer.
	ModeCut Mode = "cut"
	// ModeRestart is a one-off: it closes every connection, as a restarting server
	// would, and the proxy passes again (Mode then reports ModePass).
	ModeRestart Mode = "restart"
)

// Proxy is a TCP proxy on 127.0.0.1 between a sink and its server, for putting a
// fault on the wire. Point the sink at Addr; it relays to the upstream address in
// ModePass until told otherwise with Set. It is safe for concurrent use.
type Proxy struct {
	upstream string
	addr     string // where the proxy listens; kept across ModeRefuse

	mu     sync.Mutex
	mode   Mode
	ln     net.Listener // nil while refusing
	conns  map[*relay]struct{}
	closed bool
	wg     sync.WaitGroup
}

// relay is one client connection and, unless it was accepted blackholed, the
// upstream connection made for it.
type relay struct {
	client, up net.Conn
	lost       bool // blackholed bytes: closed when the proxy leaves ModeBlackhole
	closeOnce  sync.Once
}

// close closes both sides; reset makes the client see a reset (RST) rather than an
// orderly end, as from a host that dropped the connection.
func (r *relay) close(reset bool) {
	r.closeOnce.Do(func() {
		if tc, ok := r.client.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = r.client.Close()
		if r.up != nil {
			_ = r.up.Close()
		}
	})
}

// StartProxy starts a Proxy in ModePass relaying to upstream (host:port) and closes it
// when the test ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sinktest: proxy listen: %v", err)
	}
	p := &Proxy{upstream: upstream, addr: ln.Addr().String(), mode: ModePass, conns: map[*relay]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address, host:port on 127.0.0.1. It stays the same across modes.
func (p *Proxy) Addr() string { return p.addr }

// Mode reports the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Set switches to mode m. It fails only when the proxy is closed, m is unknown, or the
// address cannot be listened on again after ModeRefuse (another process took it).
func (p *Proxy) Set(m Mode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("sinktest: proxy is closed")
	}
	switch m {
	case ModeRefuse:
		if p.ln != nil {
			_ = p.ln.Close()
			p.ln = nil
		}
		p.dropLocked(func(*relay) bool { return true }, true)
		p.mode = m
		return nil
	case ModeRestart:
		p.dropLocked(func(*relay) bool { return true }, false)
		m = ModePass
	case ModePass, ModeCut:
		if p.mode == ModeBlackhole {
			p.dropLocked(func(r *relay) bool { return r.lost }, false)
		}
	case ModeBlackhole:
	default:
		return fmt.Errorf("sinktest: unknown proxy mode %q", m)
	}
	if p.ln == nil {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("sinktest: proxy listen again on %s: %w", p.addr, err)
		}
		p.serve(ln)
	}
	p.mode = m
	return nil
}

// Close stops the proxy: it closes the listener and every connection, and waits for
// its goroutines to end.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.dropLocked(func(*relay) bool { return true }, false)
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) dropLocked(which func(*relay) bool, reset bool) {
	for r := range p.conns {
		if which(r) {
			r.close(reset)
			delete(p.conns, r)
		}
	}
}

// serve accepts on ln until it is closed. The caller holds p.mu or owns p alone.
func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed: by ModeRefuse or Close
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(c)
			}()
		}
	}()
}

// dialTimeout bounds the dial to the upstream; a local server answers at once.
const dialTimeout = 2 * time.Second

func (p *Proxy) handle(c net.Conn) {
	r := &relay{client: c}
	p.mu.Lock()
	mode := p.mode
	p.mu.Unlock()
	if mode != ModeBlackhole {
		up, err := net.DialTimeout("tcp", p.upstream, dialTimeout)
		if err != nil {
			// The server itself is down: the client sees its connection end.
			_ = c.Close()
			return
		}
		r.up = up
	}
	p.mu.Lock()
	if p.closed || p.mode == ModeRefuse {
		p.mu.Unlock()
		r.close(true)
		return
	}
	if r.up == nil {
		r.lost = true // accepted blackholed: it has no upstream to pass to later
	}
	p.conns[r] = struct{}{}
	p.mu.Unlock()

	if r.up == nil {
		p.pump(r, r.client, nil, true)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pump(r, r.up, r.client, false)
	}()
	p.pump(r, r.client, r.up, true)
	<-done
}

// pump copies from src to dst one read at a time, consulting the mode for each chunk.
// fromClient says which way it runs: only the client's writes are cut after. It
// returns, closing both sides, when either side ends.
func (p *Proxy) pump(r *relay, src, dst net.Conn, fromClient bool) {
	defer func() {
		r.close(false)
		p.mu.Lock()
		delete(p.conns, r)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode := p.mode
			if mode == ModeBlackhole || dst == nil {
				r.lost = true
			}
			p.mu.Unlock()
			switch {
			case mode == ModeBlackhole || dst == nil:
				// Swallowed: nothing reaches the other side.
			case mode == ModeCut && fromClient:
				_, _ = dst.Write(buf[:n])
				return
			case mode == ModeCut:
				// The server's answer: never delivered in this mode, even when it comes
				// back before the cut closes the connection (the row would otherwise
				// depend on which goroutine runs first).
				return
			default:
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
