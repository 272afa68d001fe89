package httpsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func testEvent() outbox.Event {
	return outbox.Event{
		ID: "0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f", Type: "order.created", EntityID: "entry-1", UserID: "user-1",
		IsNewRecord: true, Priority: 10, Metadata: map[string]string{"source": "manual_entry"},
		Payload: json.RawMessage(`{"kind":"weight","quantity":72.5}`), CreatedAt: t0, Attempts: 2,
	}
}

func newSink(t *testing.T, cfg httpsink.Config) *httpsink.Sink {
	t.Helper()
	s, err := httpsink.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// hang never answers; it returns once the client has gone. (The body is read first:
// only then does the server notice a client that hangs up.)
func hang(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// respond serves every request with code and the given headers.
func respond(code int, header map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte("reason from server"))
	}
}

// Each status lands in its class: delivered, retried, given up, or suspected (held
// while no other event gets through: a wrong path or token answers so to every event).
func TestStatusClasses(t *testing.T) {
	const (
		delivered = "delivered"
		retry     = "retry"
		permanent = "permanent"
		suspected = "suspected"
	)
	httpDate := t0.Add(90 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name       string
		code       int
		header     map[string]string
		want       string
		retryAfter time.Duration // when > 0 (or wantZeroAfter), the Retry-After the error must carry
		zeroAfter  bool
	}{
		{"200 OK", 200, nil, delivered, 0, false},
		{"201 Created", 201, nil, delivered, 0, false},
		{"202 Accepted", 202, nil, delivered, 0, false},
		{"204 No Content", 204, nil, delivered, 0, false},
		{"409 Conflict is already there", 409, nil, delivered, 0, false},
		{"408 Request Timeout", 408, nil, retry, 0, false},
		{"425 Too Early", 425, nil, retry, 0, false},
		{"429 without Retry-After", 429, nil, retry, 0, false},
		{"429 Retry-After seconds", 429, map[string]string{"Retry-After": "7"}, retry, 7 * time.Second, false},
		{"503 Retry-After HTTP date", 503, map[string]string{"Retry-After": httpDate}, retry, 90 * time.Second, false},
		{"503 Retry-After date in the past", 503, map[string]string{"Retry-After": t0.Add(-time.Hour).Format(http.TimeFormat)}, retry, 0, true},
		{"503 Retry-After capped", 503, map[string]string{"Retry-After": "999999"}, retry, time.Hour, false},
		{"503 Retry-After garbage ignored", 503, map[string]string{"Retry-After": "soon"}, retry, 0, false},
		{"500", 500, nil, retry, 0, false},
		{"502", 502, nil, retry, 0, false},
		{"504", 504, nil, retry, 0, false},
		{"400", 400, nil, permanent, 0, false},
		{"410", 410, nil, permanent, 0, false},
		{"413", 413, nil, permanent, 0, false},
		{"422", 422, nil, permanent, 0, false},
		{"401 suspected: credentials", 401, nil, suspected, 0, false},
		{"403 suspected: credentials", 403, nil, suspected, 0, false},
		{"404 suspected: endpoint", 404, nil, suspected, 0, false},
		{"405 suspected: endpoint", 405, nil, suspected, 0, false},
		{"302 not followed, suspected", 302, map[string]string{"Location": "/elsewhere"}, suspected, 0, false},
		{"308 not followed, suspected", 308, map[string]string{"Location": "/elsewhere"}, suspected, 0, false},
	}
	wantReason := map[int]string{
		401: outbox.ReasonCredentials, 403: outbox.ReasonCredentials,
		404: "endpoint not found (HTTP 404)", 405: "endpoint not found (HTTP 405)",
		302: "endpoint redirects (HTTP 302)", 308: "endpoint redirects (HTTP 308)",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var followed atomic.Int32
			mux := http.NewServeMux()
			mux.Handle("/events", respond(tt.code, tt.header))
			mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { followed.Add(1) })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			s := newSink(t, httpsink.Config{URL: srv.URL + "/events", Clock: outboxtest.NewClock(t0)})

			err := s.Handle(context.Background(), testEvent())
			var de *outbox.DestinationError
			isDest := errors.As(err, &de)
			switch tt.want {
			case delivered:
				if err != nil {
					t.Fatalf("Handle = %v, want delivered", err)
				}
			case retry:
				if err == nil || outbox.IsPermanent(err) || isDest {
					t.Fatalf("Handle = %v, want a retryable error", err)
				}
			case permanent:
				if !outbox.IsPermanent(err) || isDest {
					t.Fatalf("Handle = %v, want a permanent error of the event", err)
				}
			case suspected:
				// Suspected, wrapping the permanent error the event is judged by once
				// other events get through; never a plain destination fault.
				if !isDest || !de.Suspected || de.Reason != wantReason[tt.code] || de.Target != "" ||
					!outbox.IsPermanent(err) || outbox.IsUnavailable(err) {
					t.Fatalf("Handle = %v (%+v), want suspected %q wrapping a permanent error", err, de, wantReason[tt.code])
				}
				if tt.code/100 == 3 && !strings.Contains(err.Error(), "to /elsewhere") {
					t.Fatalf("Handle = %v, want the redirect's Location named", err)
				}
			}
			if err != nil {
				var se *httpsink.StatusError
				if !errors.As(err, &se) || se.StatusCode != tt.code || se.Body != "reason from server" {
					t.Fatalf("error %v: want a StatusError with code %d and the body", err, tt.code)
				}
			}
			d, ok := outbox.RetryAfterDelay(err)
			switch {
			case tt.retryAfter > 0 || tt.zeroAfter:
				if !ok || d != tt.retryAfter {
					t.Fatalf("Retry-After = %v (%v), want %v", d, ok, tt.retryAfter)
				}
			case ok:
				t.Fatalf("error carries Retry-After %v, want none", d)
			}
			if followed.Load() != 0 {
				t.Fatalf("the redirect was followed")
			}
		})
	}
}

func TestRequestCarriesEnvelopeAndHeaders(t *testing.T) {
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		body = make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	s := newSink(t, httpsink.Config{
		URL: srv.URL, BearerToken: "s3cret",
		Header: http.Header{"X-Tenant": {"fitiq"}},
	})
	e := testEvent()
	if err := s.Handle(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	checks := map[string]string{
		"Idempotency-Key": e.ID,
		"Content-Type":    "application/json",
		"Authorization":   "Bearer s3cret",
		"X-Tenant":        "fitiq",
		"User-Agent":      "outbox-httpsink",
	}
	if got.Method != http.MethodPost {
		t.Fatalf("method %s, want POST", got.Method)
	}
	for k, want := range checks {
		if v := got.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	var env sink.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	want := sink.NewEnvelope(e)
	if env.ID != want.ID || env.Type != want.Type || env.EntityID != "entry-1" || env.UserID != "user-1" ||
		!env.IsNewRecord || env.Priority != 10 || env.Metadata["source"] != "manual_entry" ||
		string(env.Payload) != string(e.Payload) || !env.CreatedAt.Equal(t0) || env.Attempt != 2 {
		t.Fatalf("envelope %+v, want the event's fields", env)
	}
	// The documented field names, as a receiver in another language reads them.
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	for _, k := range []string{"id", "type", "entity_id", "user_id", "is_new_record", "priority", "metadata", "payload", "created_at", "attempt"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("envelope lacks %q: %s", k, body)
		}
	}
}

// A server that never answers: the request times out and the attempt is retryable.
func TestHangingServerTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for the handler
	s := newSink(t, httpsink.Config{URL: srv.URL, Timeout: 50 * time.Millisecond})
	err := s.Handle(context.Background(), testEvent())
	var ne net.Error
	if err == nil || outbox.IsPermanent(err) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Handle = %v, want a retryable timeout", err)
	}
}

// A peer that accepts the connection and never writes a byte (not even headers).
func TestSilentPeerTimesOut(t *testing.T) {
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
			defer c.Close() // held open, silent, until the listener closes
		}
	}()
	s := newSink(t, httpsink.Config{URL: "http://" + ln.Addr().String(), Timeout: 50 * time.Millisecond})
	err = s.Handle(context.Background(), testEvent())
	var ne net.Error
	if err == nil || outbox.IsPermanent(err) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Handle = %v, want a retryable timeout", err)
	}
}

// The processor's handler deadline cuts a hanging request short even when the sink's
// own timeout is longer.
func TestContextDeadlineEndsRequest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hang))
	defer srv.Close()
	s := newSink(t, httpsink.Config{URL: srv.URL, Timeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Handle(ctx, testEvent())
	if !errors.Is(err, context.DeadlineExceeded) || outbox.IsPermanent(err) {
		t.Fatalf("Handle = %v, want a retryable deadline error", err)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	srv := httptest.NewServer(respond(200, nil))
	url := srv.URL
	srv.Close()
	s := newSink(t, httpsink.Config{URL: url})
	if err := s.Handle(context.Background(), testEvent()); err == nil || outbox.IsPermanent(err) {
		t.Fatalf("Handle = %v, want a retryable error", err)
	}
}

func TestTLSVerifiedByDefault(t *testing.T) {
	srv := httptest.NewTLSServer(respond(200, nil)) // self-signed
	defer srv.Close()
	err := newSink(t, httpsink.Config{URL: srv.URL}).Handle(context.Background(), testEvent())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Handle to a self-signed server = %v, want a certificate error", err)
	}
	if err := newSink(t, httpsink.Config{URL: srv.URL, InsecureSkipVerify: true}).Handle(context.Background(), testEvent()); err != nil {
		t.Fatalf("with InsecureSkipVerify: %v", err)
	}
	if err := newSink(t, httpsink.Config{URL: srv.URL, Client: srv.Client()}).Handle(context.Background(), testEvent()); err != nil {
		t.Fatalf("with a client trusting the server: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  httpsink.Config
		want string
	}{
		{"no URL", httpsink.Config{}, "httpsink.Config.URL must not be empty"},
		{"bad scheme", httpsink.Config{URL: "ftp://x"}, "scheme must be http or https"},
		{"no host", httpsink.Config{URL: "http://"}, "has no host"},
		{"negative timeout", httpsink.Config{URL: "http://x", Timeout: -1}, "Timeout must not be negative"},
		{"reserved header", httpsink.Config{URL: "http://x", Header: http.Header{"idempotency-key": {"x"}}}, "cannot set Idempotency-Key"},
		{"token with newline", httpsink.Config{URL: "http://x", BearerToken: "a\nb"}, "BearerToken must not contain line breaks"},
		{"header name with a space", httpsink.Config{URL: "http://x", Header: http.Header{"Bad Name": {"v"}}}, `"Bad Name" is not a header name`},
		{"header name with a colon", httpsink.Config{URL: "http://x", Header: http.Header{"X:Y": {"v"}}}, `"X:Y" is not a header name`},
		{"empty header name", httpsink.Config{URL: "http://x", Header: http.Header{"": {"v"}}}, `"" is not a header name`},
		{"header value with a line break", httpsink.Config{URL: "http://x", Header: http.Header{"X-A": {"a\r\nX-Evil: 1"}}}, "the value of X-A"},
		{"header value with a NUL", httpsink.Config{URL: "http://x", Header: http.Header{"X-A": {"a\x00b"}}}, "control character"},
		{"header value with DEL", httpsink.Config{URL: "http://x", Header: http.Header{"X-A": {"a\x7fb"}}}, "control character"},
		{"header value with a leading space", httpsink.Config{URL: "http://x", Header: http.Header{"X-A": {" v"}}}, "surrounding white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := httpsink.New(tt.cfg)
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	// What RFC 9110 allows is accepted: token punctuation, inner spaces and tabs, obs-text.
	ok := httpsink.Config{URL: "http://x", Header: http.Header{"X-Odd!#$%&'*+.^_`|~1": {"a b\tc", "caf\xc3\xa9", ""}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid headers refused: %v", err)
	}
}

// Through the processor, each class of answer leaves the event in the state the
// outbox promises: delivered, retried at the server's Retry-After, or given up.
func TestProcessorOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		status    outbox.Status
		givenUp   bool
		nextAfter time.Duration
	}{
		{"200 completes", respond(200, nil), outbox.StatusCompleted, false, 0},
		{"409 completes", respond(409, nil), outbox.StatusCompleted, false, 0},
		{"503 retries after the policy delay", respond(503, nil), outbox.StatusFailed, false, time.Second},
		{"429 Retry-After 120 wins over 1s", respond(429, map[string]string{"Retry-After": "120"}), outbox.StatusFailed, false, 120 * time.Second},
		{"Retry-After shorter than the backoff loses", respond(503, map[string]string{"Retry-After": "0"}), outbox.StatusFailed, false, time.Second},
		{"400 gives up", respond(400, nil), outbox.StatusFailed, true, 0},
		{"hanging server retries", hang, outbox.StatusFailed, false, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			store := sqlitetest.NewStore(t)
			clock := outboxtest.NewClock(t0)
			s := newSink(t, httpsink.Config{URL: srv.URL, Timeout: 100 * time.Millisecond, Clock: clock})
			p, err := outbox.NewProcessor(store, s, outbox.Config{Clock: clock, Logger: outboxtest.Discard, Retry: outbox.RetryPolicy{Jitter: -1}})
			if err != nil {
				t.Fatal(err)
			}
			e := outbox.NewEvent("order.created", "entry-1", "user-1")
			if err := store.Enqueue(context.Background(), t0, e); err != nil {
				t.Fatal(err)
			}
			if n, err := p.ProcessBatch(context.Background()); n != 1 || err != nil {
				t.Fatalf("ProcessBatch = %d, %v", n, err)
			}
			got, err := store.Get(context.Background(), e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.status || got.GivenUp() != tt.givenUp {
				t.Fatalf("status %s given up %v (error %q), want %s given up %v", got.Status, got.GivenUp(), got.LastError, tt.status, tt.givenUp)
			}
			if tt.nextAfter > 0 && !got.NextAttemptAt.Equal(t0.Add(tt.nextAfter)) {
				t.Fatalf("next attempt at %v, want %v", got.NextAttemptAt, t0.Add(tt.nextAfter))
			}
		})
	}
}

// A server that refuses the connection (a closed port) is unavailable, not a failure
// of the event; a peer that accepted it and then timed out is not unavailable.
func TestRefusedConnectionIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the kernel refuses the dial
	s := newSink(t, httpsink.Config{URL: "http://" + addr, Timeout: time.Second})
	err = s.Handle(context.Background(), testEvent())
	if err == nil || !outbox.IsUnavailable(err) || outbox.IsPermanent(err) {
		t.Fatalf("Handle to a closed port = %v, want an error marked unavailable", err)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s = newSink(t, httpsink.Config{URL: "http://" + silent.Addr().String(), Timeout: 50 * time.Millisecond})
	if err := s.Handle(context.Background(), testEvent()); outbox.IsUnavailable(err) {
		t.Fatalf("a request sent and not answered in time is not unavailable (it may have landed): %v", err)
	}
}

// A receiver's error body may hold anything: a rune cut by the length limit, NUL bytes,
// invalid UTF-8, megabytes. What the error keeps is valid UTF-8, bounded, without
// control characters, so that any store can record it (PostgreSQL refuses NUL and
// invalid UTF-8 in text).
func TestErrorBodyIsCleanBoundedUTF8(t *testing.T) {
	a511 := strings.Repeat("a", 511)
	tests := []struct {
		name string
		body string
		want string // the whole Body, when set
		pre  string // else: what Body must start with
	}{
		{"511 ASCII bytes then a 3-byte rune", a511 + "€ and more", "", strings.Repeat("a", 509) + "…"},
		{"511 ASCII bytes then a 2-byte rune, nothing more", a511 + "é", "", strings.Repeat("a", 509) + "…"},
		{"exactly 512 bytes is kept whole", a511 + "b", a511 + "b", ""},
		{"NUL and control bytes", "bad\x00input\x07here\x7f\x1b[31m\u0085end", "bad\uFFFDinput\uFFFDhere\uFFFD\uFFFD[31m end", ""},
		{"invalid UTF-8", "caf\xc3 \xff\xfe ok \xe2\x82", "caf\uFFFD \uFFFD\uFFFD ok \uFFFD\uFFFD", ""},
		{"white space runs and line breaks", "  {\n\t\"error\": \"x\"\r\n}\n\n", `{ "error": "x" }`, ""},
		{"bidirectional overrides", "user \u202eevil\u202c ok", "user \uFFFDevil\uFFFD ok", ""},
		{"huge body of NULs and invalid bytes", strings.Repeat("\x00\xff", 8<<20), "", "\uFFFD\uFFFD"},
		{"huge body of text", strings.Repeat("é", 4<<20), "", "éé"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnprocessableEntity)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			err := newSink(t, httpsink.Config{URL: srv.URL}).Handle(context.Background(), testEvent())
			var se *httpsink.StatusError
			if !errors.As(err, &se) || !outbox.IsPermanent(err) {
				t.Fatalf("Handle = %v, want a permanent StatusError", err)
			}
			b := se.Body
			if !utf8.ValidString(b) || len(b) > httpsink.MaxErrorBody || strings.ContainsFunc(b, unicode.IsControl) {
				t.Fatalf("Body (%d bytes) %q: want valid UTF-8 of at most %d bytes without control characters", len(b), b, httpsink.MaxErrorBody)
			}
			if !utf8.ValidString(err.Error()) || strings.ContainsFunc(err.Error(), unicode.IsControl) {
				t.Fatalf("error text %q is not clean", err.Error())
			}
			switch {
			case tt.want != "" && b != tt.want:
				t.Fatalf("Body %q, want %q", b, tt.want)
			case tt.pre != "" && !strings.HasPrefix(b, tt.pre):
				t.Fatalf("Body %q, want it to start with %q", b, tt.pre)
			}
			if len(tt.body) > httpsink.MaxErrorBody && !strings.HasSuffix(b, "…") {
				t.Fatalf("Body %q of a body cut short does not end in …", b)
			}
		})
	}
}
