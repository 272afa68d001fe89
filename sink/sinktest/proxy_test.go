package sinktest

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoServer is a plain TCP echo server that also records every byte it received, so
// that a test can tell what reached the server from what came back.
type echoServer struct {
	ln net.Listener
	mu sync.Mutex
	in []byte
	wg sync.WaitGroup
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	conns := map[net.Conn]struct{}{}
	var mu sync.Mutex
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.in = append(s.in, buf[:n]...)
						s.mu.Unlock()
						_, _ = c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.in)
}

// waitReceived waits for the server to have received want, which travels through
// the proxy asynchronously.
func (s *echoServer) waitReceived(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: a busy machine must not fail it
	for s.received() != want {
		if time.Now().After(deadline) {
			t.Fatalf("server received %q, want %q", s.received(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Minute)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads the echo.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// readEnds reads from c and expects the connection to end (EOF or reset) rather than
// time out.
func readEnds(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection still open; want it closed by the proxy")
	}
}

// readSilent expects nothing to arrive on c for a while, the connection staying open.
func readSilent(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	n, err := c.Read(make([]byte, 64))
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d bytes, %v; want nothing until the deadline", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

func setMode(t *testing.T, p *Proxy, m Mode) {
	t.Helper()
	if err := p.Set(m); err != nil {
		t.Fatalf("Set(%s): %v", m, err)
	}
}

func TestProxyPasses(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	roundTrip(t, c, "hello")
	roundTrip(t, c, "again")
	if got := p.Mode(); got != ModePass {
		t.Fatalf("Mode = %s, want pass", got)
	}
}

func TestProxyRefuses(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	open := dial(t, p.Addr())
	roundTrip(t, open, "before")

	setMode(t, p, ModeRefuse)
	readEnds(t, open) // reset, as from a host that went away
	_, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want ECONNREFUSED", err)
	}

	setMode(t, p, ModePass)
	roundTrip(t, dial(t, p.Addr()), "after") // same address again
}

func TestProxyBlackholes(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	idle := dial(t, p.Addr())
	roundTrip(t, idle, "x") // open before, and quiet during, the blackhole
	busy := dial(t, p.Addr())
	roundTrip(t, busy, "y")

	setMode(t, p, ModeBlackhole)
	fresh := dial(t, p.Addr()) // accepted: TCP is up
	for _, c := range []net.Conn{fresh, busy} {
		if _, err := c.Write([]byte("lost")); err != nil {
			t.Fatalf("write: %v", err)
		}
		readSilent(t, c)
	}
	if got := echo.received(); got != "xy" {
		t.Fatalf("server received %q during the blackhole, want only what came before", got)
	}

	setMode(t, p, ModePass)
	readEnds(t, fresh) // lost bytes: their stream is broken, so they are closed
	readEnds(t, busy)
	roundTrip(t, idle, "z") // lost nothing: still relays
	roundTrip(t, dial(t, p.Addr()), "new")
}

func TestProxyCutsAfterTheRequest(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	roundTrip(t, c, "hello ") // a connection set up before, as a broker client's would be

	setMode(t, p, ModeCut)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatalf("write: %v", err)
	}
	readEnds(t, c)
	echo.waitReceived(t, "hello request") // the request reached the server

	fresh := dial(t, p.Addr())
	if _, err := fresh.Write([]byte("!")); err != nil {
		t.Fatalf("write: %v", err)
	}
	readEnds(t, fresh)
	echo.waitReceived(t, "hello request!")

	setMode(t, p, ModePass)
	roundTrip(t, dial(t, p.Addr()), "whole")
}

func TestProxyRestartDropsConnectionsAndPasses(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")

	setMode(t, p, ModeRestart)
	readEnds(t, a)
	readEnds(t, b)
	if got := p.Mode(); got != ModePass {
		t.Fatalf("Mode after restart = %s, want pass", got)
	}
	roundTrip(t, dial(t, p.Addr()), "back")
}

func TestProxyUpstreamDownEndsTheConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := StartProxy(t, addr)
	readEnds(t, dial(t, p.Addr()))
}

func TestProxySetAfterCloseAndUnknownMode(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	p := StartProxy(t, echo.ln.Addr().String())
	if err := p.Set("sideways"); err == nil {
		t.Fatal("Set(unknown mode) = nil, want an error")
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, "x")
	p.Close()
	readEnds(t, c)
	if err := p.Set(ModePass); err == nil {
		t.Fatal("Set after Close = nil, want an error")
	}
	p.Close() // twice is fine: the test's cleanup does it again
}
