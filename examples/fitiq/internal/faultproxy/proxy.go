// Package faultproxy is a faulty network for tests and the FitIQ demo: a real HTTP
// proxy on a loopback port that forwards requests to a target, except for a share it
// drops, delays or fails, and that can go offline (its port refuses connections)
// for a while. Decisions come from a seeded random source, so a run's fault mix is
// reproducible; which request meets which fault still depends on timing.
package faultproxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the proxy does with one request.
type Fault int

const (
	// Pass forwards the request and its answer.
	Pass Fault = iota
	// Delay forwards the request after a pause of up to Config.MaxDelay.
	Delay
	// Fail answers 503 Service Unavailable without forwarding.
	Fail
	// Throttle answers 429 Too Many Requests with "Retry-After: 1" without forwarding.
	Throttle
	// DropRequest closes the connection before forwarding: the target never sees it.
	DropRequest
	// DropResponse forwards the request, then closes the connection instead of passing
	// the answer on: the target acted, and the client cannot know.
	DropResponse
)

func (f Fault) String() string {
	switch f {
	case Pass:
		return "pass"
	case Delay:
		return "delay"
	case Fail:
		return "fail"
	case Throttle:
		return "throttle"
	case DropRequest:
		return "drop-request"
	case DropResponse:
		return "drop-response"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Config tunes a Proxy. The shares are probabilities, each request meeting at most
// one fault; they must add up to at most 1.
type Config struct {
	// Target is the base URL requests are forwarded to. Required.
	Target string
	// Seed seeds the random source that picks faults. Defaults to 1.
	Seed uint64
	// DropRequest, DropResponse, Fail, Throttle and Delay are the shares of requests
	// that meet each fault. Default to 0: a perfect network.
	DropRequest, DropResponse, Fail, Throttle, Delay float64
	// MaxDelay bounds a Delay fault. Defaults to 200ms.
	MaxDelay time.Duration
	// Logger receives a line per fault. Defaults to a logger that discards.
	Logger *slog.Logger
}

// Stats counts what the proxy did.
type Stats struct {
	Requests  int64 // requests received
	Forwarded int64 // requests passed on to the target (DropResponse included)
	Faults    map[Fault]int64
	Offline   time.Duration // total time spent offline
	Outages   int           // how many times it went offline
}

// Proxy is a running faulty network.
type Proxy struct {
	cfg    Config
	target *url.URL
	addr   string
	client *http.Client

	mu       sync.Mutex
	rng      *rand.Rand
	srv      *http.Server
	serving  chan struct{} // closed when the current srv's Serve returns
	script   []Fault
	offSince time.Time
	offline  time.Duration
	outages  int

	requests, forwarded atomic.Int64
	faults              [DropResponse + 1]atomic.Int64
}

// Start listens on a free loopback port and starts forwarding.
func Start(cfg Config) (*Proxy, error) {
	target, err := url.Parse(cfg.Target)
	if err != nil || target.Scheme != "http" || target.Host == "" {
		return nil, fmt.Errorf("faultproxy: Config.Target %q is not an http:// URL", cfg.Target)
	}
	shares := []float64{cfg.DropRequest, cfg.DropResponse, cfg.Fail, cfg.Throttle, cfg.Delay}
	total := 0.0
	for _, s := range shares {
		if s < 0 || s > 1 {
			return nil, fmt.Errorf("faultproxy: a fault share must be within 0–1, got %g", s)
		}
		total += s
	}
	if total > 1 {
		return nil, fmt.Errorf("faultproxy: fault shares add up to %g, over 1", total)
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		cfg: cfg, target: target, addr: ln.Addr().String(),
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		// Its own transport: connections to the target are not shared with anyone.
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
	p.serve(ln)
	return p, nil
}

// URL is the proxy's base URL: point the client here instead of at the target.
func (p *Proxy) URL() string { return "http://" + p.addr }

func (p *Proxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(p.handle), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	p.srv, p.serving = srv, done
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// SetOffline takes the network down (true): the port stops accepting connections, and
// open ones, requests in flight included, are cut. false brings it back on the same port.
func (p *Proxy) SetOffline(off bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off == (p.srv == nil) {
		return nil
	}
	if off {
		p.srv.Close() // listener and every connection, at once
		<-p.serving
		p.srv = nil
		p.offSince = time.Now()
		p.outages++
		p.cfg.Logger.Info("network offline")
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago; the kernel may need a moment to agree
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("faultproxy: back online on %s: %w", p.addr, err)
	}
	p.offline += time.Since(p.offSince)
	p.serve(ln)
	p.cfg.Logger.Info("network online")
	return nil
}

// Offline reports whether the network is down.
func (p *Proxy) Offline() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.srv == nil
}

// Inject makes the next requests meet these faults, in order, before the random
// choice resumes: a test's deterministic script.
func (p *Proxy) Inject(faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script = append(p.script, faults...)
}

// Stats returns what the proxy has done so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	s := Stats{Offline: p.offline, Outages: p.outages}
	if p.srv == nil {
		s.Offline += time.Since(p.offSince)
	}
	p.mu.Unlock()
	s.Requests, s.Forwarded = p.requests.Load(), p.forwarded.Load()
	s.Faults = map[Fault]int64{}
	for f := range p.faults {
		if n := p.faults[f].Load(); n > 0 {
			s.Faults[Fault(f)] = n
		}
	}
	return s
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		p.srv.Close()
		<-p.serving
		p.srv = nil
	}
	p.client.CloseIdleConnections()
	return nil
}

func (p *Proxy) pick() (Fault, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delay := time.Duration(p.rng.Int64N(int64(p.cfg.MaxDelay)) + 1)
	if len(p.script) > 0 {
		f := p.script[0]
		p.script = p.script[1:]
		return f, delay
	}
	x := p.rng.Float64()
	for _, c := range []struct {
		f     Fault
		share float64
	}{{DropRequest, p.cfg.DropRequest}, {DropResponse, p.cfg.DropResponse}, {Fail, p.cfg.Fail}, {Throttle, p.cfg.Throttle}, {Delay, p.cfg.Delay}} {
		if x < c.share {
			return c.f, delay
		}
		x -= c.share
	}
	return Pass, delay
}

func (p *Proxy) handle(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	f, delay := p.pick()
	p.faults[f].Add(1)
	if f != Pass {
		p.cfg.Logger.Debug("fault", "fault", f, "method", r.Method, "path", r.URL.Path)
	}
	switch f {
	case DropRequest:
		cut(w)
		return
	case Fail:
		http.Error(w, `{"error":"faultproxy: service unavailable"}`, http.StatusServiceUnavailable)
		return
	case Throttle:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"faultproxy: too many requests"}`, http.StatusTooManyRequests)
		return
	case Delay:
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	resp, body, err := p.forward(r)
	if err != nil {
		p.cfg.Logger.Warn("forward failed", "err", err)
		http.Error(w, `{"error":"faultproxy: bad gateway"}`, http.StatusBadGateway)
		return
	}
	if f == DropResponse {
		cut(w)
		return
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// forward sends r to the target and reads the whole answer.
func (p *Proxy) forward(r *http.Request) (*http.Response, []byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, err
	}
	u := *p.target
	u.Path = r.URL.Path
	u.RawPath = r.URL.RawPath
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for _, h := range []string{"Authorization", "Content-Type", "Accept", "User-Agent", "Traceparent", "Tracestate", "Baggage"} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	p.forwarded.Add(1)
	resp, err := p.client.Do(out)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, data, nil
}

// cut closes the client's connection without an answer, with a reset rather than an
// orderly close, as a network that drops a connection does.
func cut(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection without answering
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
