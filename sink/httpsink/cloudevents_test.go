package httpsink_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/httpsink"
)

// TestCloudEventsReadByTheSDKsHTTPBinding: in both CloudEvents modes, every request
// the sink sends is read by the CloudEvents Go SDK's HTTP binding as its event, in the
// mode asked for, each event once; the ce- headers are percent-encoded as the binding
// says (an entity ID with spaces, quotes, a percent sign and an é).
func TestCloudEventsReadByTheSDKsHTTPBinding(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		format sink.EnvelopeFormat
		source string
		mode   binding.Encoding
	}{
		{sink.EnvelopeCloudEventsStructured, "", binding.EncodingStructured},
		{sink.EnvelopeCloudEventsBinary, "", binding.EncodingBinary},
		{sink.EnvelopeCloudEventsBinary, "https://orders.example.com/outbox", binding.EncodingBinary},
	} {
		t.Run(string(tt.format), func(t *testing.T) {
			t.Parallel()
			type got struct {
				req  *http.Request
				body []byte
			}
			var (
				mu   sync.Mutex
				reqs []got
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				mu.Lock()
				reqs = append(reqs, got{r, body})
				mu.Unlock()
			}))
			t.Cleanup(srv.Close)
			s, err := httpsink.New(httpsink.Config{URL: srv.URL, Envelope: tt.format, CloudEventsSource: tt.source})
			if err != nil {
				t.Fatal(err)
			}
			events := cetest.Events(8)
			byID := map[string]outbox.Event{}
			for _, e := range events {
				byID[e.ID] = e
				if err := s.Handle(t.Context(), e); err != nil {
					t.Fatalf("event %s: %v", e.ID, err)
				}
			}
			seen := map[string]int{}
			mu.Lock()
			all := reqs
			mu.Unlock()
			for _, g := range all {
				ev, mode, err := cetest.FromHTTP(g.req, g.body)
				if err != nil {
					t.Fatalf("the SDK cannot read the request (%v): %v %s", g.req.Header, err, g.body)
				}
				if mode != tt.mode {
					t.Errorf("read in mode %v, want %v", mode, tt.mode)
				}
				e, ok := byID[ev.ID()]
				if !ok {
					t.Fatalf("an event that was not sent: %s", ev)
				}
				seen[ev.ID()]++
				cetest.Check(t, ev, e, tt.source)
				if g.req.Header.Get("Idempotency-Key") != e.ID {
					t.Errorf("Idempotency-Key %q, want %q", g.req.Header.Get("Idempotency-Key"), e.ID)
				}
				if tt.mode == binding.EncodingBinary {
					for k, vs := range g.req.Header {
						if strings.HasPrefix(k, "Ce-") && strings.ContainsFunc(vs[0], func(r rune) bool { return r <= ' ' || r > '~' || r == '"' }) {
							t.Errorf("header %s: %q is not percent-encoded", k, vs[0])
						}
					}
					if strings.Contains(e.EntityID, " ") && !strings.Contains(g.req.Header.Get("Ce-Subject"), "%20") {
						t.Errorf("ce-subject %q: want %q percent-encoded", g.req.Header.Get("Ce-Subject"), e.EntityID)
					}
				} else if ct := g.req.Header.Get("Content-Type"); ct != sink.CloudEventsContentType {
					t.Errorf("Content-Type %q, want %s", ct, sink.CloudEventsContentType)
				}
			}
			for _, e := range events {
				if seen[e.ID] != 1 {
					t.Errorf("event %s arrived %d times, want once", e.ID, seen[e.ID])
				}
			}
		})
	}
}

// TestCloudEventsConfig: a wrong envelope or source is refused naming the field, and
// ce- headers of Config.Header would clash with the event's own.
func TestCloudEventsConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg   httpsink.Config
		field string
	}{
		{httpsink.Config{URL: "http://x", Envelope: "cloud-events"}, "httpsink.Config.Envelope"},
		{httpsink.Config{URL: "http://x", CloudEventsSource: "/orders"}, "httpsink.Config.CloudEventsSource"},
		{httpsink.Config{URL: "http://x", Envelope: sink.EnvelopeCloudEventsBinary, CloudEventsSource: "not a uri"}, "httpsink.Config.CloudEventsSource"},
		{httpsink.Config{URL: "http://x", Envelope: sink.EnvelopeCloudEventsBinary, Header: http.Header{"Ce-Source": {"/x"}}}, "httpsink.Config.Header"},
	} {
		_, err := httpsink.New(tt.cfg)
		var fe *outbox.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want an error naming %s", tt.cfg, err, tt.field)
		}
	}
	if _, err := httpsink.New(httpsink.Config{URL: "http://x", Header: http.Header{"Ce-Source": {"/x"}}}); err != nil {
		t.Errorf("a ce- header with the outbox envelope: %v", err)
	}
}
