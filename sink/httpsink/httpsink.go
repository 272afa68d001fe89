// Package httpsink delivers outbox events to a remote HTTP API: one POST of the event's
// JSON envelope (see package sink) per event, with the event ID as Idempotency-Key so
// that the receiver can drop a repeated delivery.
//
// What each response means for the event:
//
//	2xx, 409 Conflict              delivered (409: the receiver already has it)
//	408, 425, 429, 5xx             retried, no sooner than the Retry-After the server sent
//	network error, timeout         retried; a connection refused (nothing was sent)
//	                               is outbox.Unavailable: delivery is held, no attempt spent
//	401, 403                       suspected: the credentials (outbox.ReasonCredentials)
//	404, 405, 3xx                  suspected: the endpoint (a wrong URL or path)
//	other 4xx                      permanent: given up at once (kept, visible, retryable by an operator)
//
// A suspected failure (outbox.SuspectedFault) may be the destination's or the event's:
// a typo in the URL or a revoked token makes every event fail so, and then the
// processor holds delivery instead of giving the backlog up; when other events get
// through, the event that fails so again is given up, as the permanent error it wraps.
//
// Redirects are not followed: a POST that is redirected may be replayed as a GET, so a
// 3xx is reported instead (its Location in the error).
//
// The error of an answer that is not success holds the start of the response body,
// cleaned so that any store can keep it: valid UTF-8, no control characters, at most
// 512 bytes.
//
// The trace the event was enqueued under (its traceparent, tracestate and baggage
// metadata, see package oteloutbox) goes as the W3C headers of those names, so that
// the receiver's span joins the trace.
//
// With Config.Envelope set to a CloudEvents format, the request follows the
// CloudEvents HTTP binding: the structured mode POSTs the event's CloudEvents JSON
// document (Content-Type: application/cloudevents+json); the binary mode POSTs the
// payload (Content-Type: application/json) with each context attribute as a ce-
// header (ce-id, ce-source, ce-type, ce-subject, ce-time, ce-outboxattempt, …), its
// value percent-encoded. Idempotency-Key and the trace headers are sent either way.
package httpsink

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

// The defaults of Config.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultUserAgent     = "outbox-httpsink"
	DefaultMaxRetryAfter = time.Hour
)

// Config tunes a Sink.
type Config struct {
	// URL receives the POSTs; http or https. Required.
	URL string
	// Timeout bounds one request, from connecting to reading the response. A server
	// that does not answer in time fails the attempt, to be retried. Defaults to 10s.
	Timeout time.Duration
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// Header holds extra request headers (an API key, a tenant). They cannot replace
	// Content-Type, Idempotency-Key or Authorization.
	Header http.Header
	// UserAgent is the User-Agent header. Defaults to "outbox-httpsink".
	UserAgent string
	// InsecureSkipVerify turns TLS certificate verification off. Verification is on by
	// default; turn it off only against a test server. Ignored when Client is set.
	InsecureSkipVerify bool
	// MaxRetryAfter caps the delay a server may ask for with Retry-After, so that a
	// wrong header cannot park events for days. Defaults to 1h.
	MaxRetryAfter time.Duration
	// Client sends the requests. Defaults to a client with Timeout, TLS verification
	// (unless InsecureSkipVerify), and redirects not followed. A client given here is
	// used as is, except that redirects are still not followed.
	Client *http.Client
	// Clock reads the time for Retry-After given as an HTTP date. Defaults to
	// outbox.SystemClock.
	Clock outbox.Clock
	// Envelope is what the request carries: sink.EnvelopeOutbox (the default: the
	// JSON envelope of package sink), sink.EnvelopeCloudEventsStructured (the
	// CloudEvents JSON document, Content-Type application/cloudevents+json) or
	// sink.EnvelopeCloudEventsBinary (the payload as the body, Content-Type
	// application/json, the context attributes as ce- headers, percent-encoded as
	// the CloudEvents HTTP binding says).
	Envelope sink.EnvelopeFormat
	// CloudEventsSource is the CloudEvents source attribute, a URI-reference. Only
	// with a CloudEvents envelope; defaults to sink.DefaultCloudEventsSource.
	CloudEventsSource string
}

// Sink is an outbox.Handler that POSTs events. It is safe for concurrent use.
type Sink struct {
	cfg    Config
	url    string
	client *http.Client
	enc    sink.Encoder
}

var _ outbox.Handler = (*Sink)(nil)

// reserved headers are set by the sink; Config.Header cannot override them.
var reserved = []string{"Content-Type", "Idempotency-Key", "Authorization"}

// New returns a Sink, or an error naming the Config field that cannot work.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	client := cfg.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
		tr.MaxIdleConnsPerHost = 32 // the processor delivers several at once to one host
		client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	} else {
		c := *client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Sink{cfg: cfg, url: cfg.URL, client: client, enc: sink.NewEncoder(cfg.Envelope, cfg.CloudEventsSource)}, nil
}

func (c Config) withDefaults() Config {
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.UserAgent = cmp.Or(c.UserAgent, DefaultUserAgent)
	c.MaxRetryAfter = cmp.Or(c.MaxRetryAfter, DefaultMaxRetryAfter)
	if c.Clock == nil {
		c.Clock = outbox.SystemClock
	}
	return c
}

// Validate reports the first field of c that cannot work, naming it.
func (c Config) Validate() error {
	if c.URL == "" {
		return fieldError("URL", "must not be empty")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fieldError("URL", fmt.Sprintf("%q is not a URL: %v", c.URL, err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fieldError("URL", fmt.Sprintf("%q: scheme must be http or https", c.URL))
	}
	if u.Host == "" {
		return fieldError("URL", fmt.Sprintf("%q has no host", c.URL))
	}
	if c.Timeout < 0 {
		return fieldError("Timeout", fmt.Sprintf("must not be negative, got %s", c.Timeout))
	}
	if c.MaxRetryAfter < 0 {
		return fieldError("MaxRetryAfter", fmt.Sprintf("must not be negative, got %s", c.MaxRetryAfter))
	}
	for name, values := range c.Header {
		if !validFieldName(name) {
			return fieldError("Header", fmt.Sprintf("%q is not a header name (RFC 9110: letters, digits and !#$%%&'*+-.^_`|~)", name))
		}
		for _, v := range values {
			if !validFieldValue(v) {
				return fieldError("Header", fmt.Sprintf("the value of %s, %q, holds a control character or surrounding white space (RFC 9110)", name, v))
			}
		}
		for _, r := range reserved {
			if textproto.CanonicalMIMEHeaderKey(name) == r {
				return fieldError("Header", fmt.Sprintf("cannot set %s; the sink sets it", r))
			}
		}
		if c.Envelope.CloudEvents() && strings.HasPrefix(strings.ToLower(name), "ce-") {
			return fieldError("Header", fmt.Sprintf("cannot set %s with a CloudEvents envelope: ce- headers are the event's attributes", name))
		}
	}
	if err := sink.CheckEnvelope("httpsink.Config", c.Envelope, c.CloudEventsSource); err != nil {
		return err
	}
	if strings.ContainsAny(c.BearerToken, "\r\n") {
		return fieldError("BearerToken", "must not contain line breaks")
	}
	return nil
}

func fieldError(field, problem string) error {
	return &outbox.FieldError{Field: "httpsink.Config." + field, Problem: problem}
}

// StatusError is the error of a delivery the server answered with a status that is
// not success.
type StatusError struct {
	StatusCode int
	// Body holds the start of the response body, for the event's error history: valid
	// UTF-8 without control characters (white space runs become one space; invalid
	// bytes and other control characters become U+FFFD), at most MaxErrorBody bytes,
	// cut on a rune boundary and then ending in "…".
	Body string
	// Location is the redirect target of a 3xx, cleaned as Body is.
	Location string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("http %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Location != "" {
		msg += " to " + e.Location
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// MaxErrorBody bounds StatusError.Body, in bytes.
const MaxErrorBody = 512

// Handle POSTs e and returns nil when the server took it, a retryable error, or an
// error marked with outbox.Permanent (see the package documentation).
func (s *Sink) Handle(ctx context.Context, e outbox.Event) error {
	msg, err := s.enc.Encode(e)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(msg.Body))
	if err != nil {
		return outbox.Permanent(fmt.Errorf("build request: %w", err))
	}
	for name, values := range s.cfg.Header {
		req.Header[textproto.CanonicalMIMEHeaderKey(name)] = values
	}
	if msg.ContentType != "" {
		req.Header.Set("Content-Type", msg.ContentType)
	}
	for _, a := range msg.Attributes { // binary mode: the CloudEvents HTTP binding's ce- headers
		req.Header.Set("ce-"+a.Name, sink.PercentEncode(a.Value))
	}
	req.Header.Set("Idempotency-Key", e.ID)
	req.Header.Set("User-Agent", s.cfg.UserAgent)
	for _, k := range outbox.TraceMetadataKeys { // the trace the event was enqueued under, for the receiver to continue
		if v := e.Metadata[k]; v != "" {
			req.Header.Set(k, v)
		}
	}
	if s.cfg.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.BearerToken)
	}

	resp, err := s.client.Do(req)
	if err != nil {
		// Connection refused, reset, DNS, TLS handshake, or Timeout: worth another try.
		// (A certificate that does not verify stays so, but it may be being rotated.)
		// The *url.Error names the method and the URL, password stripped. A request
		// that never reached the server is marked unavailable, for the breaker.
		if outbox.IsUnavailable(err) {
			return outbox.Unavailable(err)
		}
		return err
	}
	defer resp.Body.Close()
	// One byte more than is kept tells a body that was cut.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody+1))
	// Drain a little more so that the connection can be reused; give up on huge bodies.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	code := resp.StatusCode
	if code/100 == 2 || code == http.StatusConflict {
		return nil
	}
	serr := &StatusError{StatusCode: code, Body: cleanText(head, MaxErrorBody)}
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		if d, ok := s.retryAfter(resp.Header.Get("Retry-After")); ok {
			return outbox.RetryAfter(serr, d)
		}
		return serr
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		// A revoked or wrong token fails every event alike; a receiver may also
		// refuse one event's entity to this client. The processor tells them apart.
		return outbox.SuspectedFault(outbox.ReasonCredentials, outbox.Permanent(serr))
	case code == http.StatusNotFound, code == http.StatusMethodNotAllowed:
		// A typo in the URL's path answers 404 (or 405) to everything; a receiver
		// may also answer 404 for one event's missing parent.
		return outbox.SuspectedFault(fmt.Sprintf("endpoint not found (HTTP %d)", code), outbox.Permanent(serr))
	case code/100 == 3:
		// http:// for https://, a moved API: every event is redirected alike.
		serr.Location = cleanText([]byte(resp.Header.Get("Location")), MaxErrorBody)
		return outbox.SuspectedFault(fmt.Sprintf("endpoint redirects (HTTP %d)", code), outbox.Permanent(serr))
	default:
		return outbox.Permanent(serr)
	}
}

// cleanText makes b, the start of a text a server sent, fit for an error message and
// any store: valid UTF-8; runs of white space (tabs and line breaks too) become one
// space, trimmed at both ends; invalid bytes, NUL and other control or bidirectional
// formatting characters become U+FFFD; at most limit bytes, cut on a rune boundary and
// then ending in "…". A b longer than limit is taken as cut short already (the reader
// read one byte more than it keeps): a rune cut in two at its end is dropped, not
// replaced.
func cleanText(b []byte, limit int) string {
	const ellipsis = "…"
	cut := len(b) > limit
	if cut {
		b = b[:limit]
		// Drop a rune that the limit cut in two.
		for j := 1; j <= min(utf8.UTFMax, len(b)); j++ {
			if utf8.RuneStart(b[len(b)-j]) {
				if !utf8.FullRune(b[len(b)-j:]) {
					b = b[:len(b)-j]
				}
				break
			}
		}
	}
	var out strings.Builder
	space := false // a space is pending: written before the next rune, if any
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case unicode.IsSpace(r):
			space = out.Len() > 0
			continue
		case r == utf8.RuneError, unicode.IsControl(r), isBidiControl(r):
			r = utf8.RuneError
		}
		if space {
			out.WriteByte(' ')
			space = false
		}
		out.WriteRune(r)
	}
	text := out.String() // at most 3 bytes for each byte of b: U+FFFD for one invalid byte
	if !cut && len(text) <= limit {
		return text
	}
	end := max(limit-len(ellipsis), 0)
	if end >= len(text) {
		return text + ellipsis
	}
	for end > 0 && !utf8.RuneStart(text[end]) {
		end--
	}
	return strings.TrimRight(text[:end], " ") + ellipsis
}

// isBidiControl reports the characters that reorder the text around them (U+202A to
// U+202E, U+2066 to U+2069, and the marks U+200E, U+200F, U+061C): in an error shown
// to an operator they could make it read otherwise than it is.
func isBidiControl(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// retryAfter parses a Retry-After value: delay seconds, or an HTTP date. A date in the
// past means "now"; values above MaxRetryAfter are capped.
func (s *Sink) retryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		d = time.Duration(min(secs, int64(s.cfg.MaxRetryAfter/time.Second)+1)) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = max(at.Sub(s.cfg.Clock.Now()), 0)
	} else {
		return 0, false
	}
	return min(d, s.cfg.MaxRetryAfter), true
}
