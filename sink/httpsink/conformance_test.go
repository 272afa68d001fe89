package httpsink_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sink/sinktest"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against an
// httptest server that stands for the receiving API. Faults of the API are arranged
// on the server; faults of the wire (refused, blackholed, restarted, cut) by a
// sinktest.Proxy in front of it.
func TestConformance(t *testing.T) {
	t.Parallel()
	sinktest.Run(t, sinktest.Harness{Name: "http", Dedup: true, Setup: setupConformance}, conformanceWant,
		sinktest.Parallel(), sinktest.BatchSize(len(hostileAnswers)))
}

// conformanceWant is what the sink must do in each row: the contract of the package
// documentation, with 401/403 and 404/405 reported as suspected destination faults
// (a receiver that answers so to every event is down for us; to one event, it is
// that event's problem).
var conformanceWant = map[sinktest.Fault]sinktest.Verdict{
	sinktest.FaultRefused:         {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
	sinktest.FaultBlackholed:      {Class: sinktest.Retry},
	sinktest.FaultRestarted:       {Class: sinktest.Delivered}, // the transport replays a POST with an Idempotency-Key on a dropped keep-alive connection
	sinktest.FaultCredentials:     {Class: sinktest.Suspected, Reason: outbox.ReasonCredentials},
	sinktest.FaultTargetMissing:   {Class: sinktest.Suspected},
	sinktest.FaultTargetRecreated: {Class: sinktest.Suspected},
	sinktest.FaultTooLarge:        {Class: sinktest.GivenUp},
	sinktest.FaultOneRejected:     {Class: sinktest.GivenUp},
	sinktest.FaultSlowAck:         {Class: sinktest.Retry},
	sinktest.FaultCutAfterRequest: {Class: sinktest.Retry},
	sinktest.FaultHostileAnswers:  {Class: sinktest.Retry},
}

const (
	conformanceToken = "s3cret"
	conformancePath  = "/events"
	maxBody          = 64 << 10 // the receiver's limit on a request body
)

func setupConformance(t *testing.T, c sinktest.Case) sinktest.Setup {
	rc := &receiver{token: conformanceToken, path: conformancePath, kept: map[string]bool{}}
	switch c.Fault {
	case sinktest.FaultCredentials:
		rc.token = "rotated" // the API wants a token the sink does not have
	case sinktest.FaultTargetMissing:
		rc.path = "/v2" + conformancePath // the endpoint is elsewhere
	case sinktest.FaultOneRejected:
		rc.reject = c.Odd
	case sinktest.FaultSlowAck:
		rc.slow = true
	case sinktest.FaultHostileAnswers:
		rc.hostile = true
	}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)

	addr := srv.Listener.Addr().String()
	var proxy *sinktest.Proxy
	switch c.Fault {
	case sinktest.FaultRefused, sinktest.FaultBlackholed, sinktest.FaultRestarted, sinktest.FaultCutAfterRequest:
		proxy = sinktest.StartProxy(t, addr)
		addr = proxy.Addr()
	}
	sink, err := httpsink.New(httpsink.Config{URL: "http://" + addr + conformancePath, BearerToken: conformanceToken})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s := sinktest.Setup{Sink: sink, Held: rc.Held}
	setProxy := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return proxy.Set(m) }
	}

	switch c.Fault {
	case sinktest.FaultRefused:
		s.Inject, s.Fix = setProxy(sinktest.ModeRefuse), setProxy(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		s.Inject, s.Fix = setProxy(sinktest.ModeBlackhole), setProxy(sinktest.ModePass)
	case sinktest.FaultRestarted:
		s.Inject = setProxy(sinktest.ModeRestart)
	case sinktest.FaultCutAfterRequest:
		s.Inject, s.Fix = setProxy(sinktest.ModeCut), setProxy(sinktest.ModePass)
	case sinktest.FaultCredentials:
		s.Fix = rc.update(func(rc *receiver) { rc.token = conformanceToken })
	case sinktest.FaultTargetMissing:
		s.Fix = rc.update(func(rc *receiver) { rc.path = conformancePath })
	case sinktest.FaultTargetRecreated:
		s.Inject = rc.update(func(rc *receiver) { rc.path = "" })
		s.Fix = rc.update(func(rc *receiver) { rc.path = conformancePath })
	case sinktest.FaultTooLarge:
		s.MaxMessageBytes = maxBody
	case sinktest.FaultSlowAck:
		s.Fix = rc.update(func(rc *receiver) { rc.slow = false })
	case sinktest.FaultHostileAnswers:
		s.Fix = rc.update(func(rc *receiver) { rc.hostile = false })
	}
	return s
}

// receiver is the receiving API of one row. It keeps each event it takes once per
// Idempotency-Key, as a receiver that honours the key does, and answers as the row's
// fault says until Fix changes its fields.
type receiver struct {
	mu      sync.Mutex
	token   string // the bearer token it accepts
	path    string // where it takes events; "" when the endpoint is gone
	reject  string // an Idempotency-Key answered 422
	slow    bool   // keep, then answer only once the sink has stopped waiting
	hostile bool   // answer with hostileAnswers in turn
	answers int    // hostile answers given
	held    []string
	kept    map[string]bool
}

func (rc *receiver) update(f func(*receiver)) func(context.Context) error {
	return func(context.Context) error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		f(rc)
		return nil
	}
}

func (rc *receiver) Held(context.Context) ([]string, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.held...), nil
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	token, path, reject, slow, hostile, n := rc.token, rc.path, rc.reject, rc.slow, rc.hostile, rc.answers
	if hostile {
		rc.answers++
	}
	rc.mu.Unlock()
	key := r.Header.Get("Idempotency-Key")
	switch {
	case path == "" || r.URL.Path != path:
		http.NotFound(w, r)
		return
	case r.Header.Get("Authorization") != "Bearer "+token:
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	case r.ContentLength > maxBody:
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	case key == reject:
		http.Error(w, `{"error":"entity_id is not valid"}`, http.StatusUnprocessableEntity)
		return
	case hostile && !hostileAnswers[n%len(hostileAnswers)](w, r):
		return
	}
	if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody)); err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	if !rc.kept[key] { // a repeat is acknowledged again, not kept again
		rc.kept[key] = true
		rc.held = append(rc.held, key)
	}
	rc.mu.Unlock()
	if slow {
		select { // the sink's handler timeout ends the wait; the bound is for a broken one
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	w.WriteHeader(http.StatusOK)
	if hostile {
		_, _ = io.WriteString(w, hostileText(4<<20)) // taken, then megabytes of junk
	}
}

// hostileAnswers are the hostile row's answers, one per event of the batch. Each
// reports whether the request is to be taken after all (the 200 with a huge body).
var hostileAnswers = []func(w http.ResponseWriter, r *http.Request) (take bool){
	func(http.ResponseWriter, *http.Request) bool { return true },
	func(w http.ResponseWriter, _ *http.Request) bool { // not HTTP at all
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_, _ = buf.WriteString("\x00\xffNOT HTTP\r\n\r\n")
			_ = buf.Flush()
			_ = conn.Close()
		}
		return false
	},
	func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "bad\x00gateway\x00", http.StatusBadGateway)
		return false
	},
	func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "\xff\xfe\xc3\x28 service \x80 unavailable", http.StatusServiceUnavailable)
		return false
	},
	func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, hostileText(8<<20))
		return false
	},
}

// hostileText is n bytes of NUL, invalid UTF-8, control characters and markup.
func hostileText(n int) string {
	const unit = "\x00\xff\xfe\x1b[31m<script>alert(1)</script>\xc3\x28"
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}
