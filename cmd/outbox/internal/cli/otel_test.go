package cli

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/fitiq/outbox"
)

// collector is an OTLP/HTTP trace receiver: it decodes each export request as a
// collector would and keeps the spans with their service names.
type collector struct {
	mu    sync.Mutex
	spans map[string][]*tracepb.Span // by service.name
	srv   *httptest.Server
}

func newCollector(t *testing.T) *collector {
	c := &collector{spans: map[string][]*tracepb.Span{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %q, want /v1/traces as application/x-protobuf", r.URL.Path, r.Header.Get("Content-Type"))
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("decode export request: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				c.spans[service] = append(c.spans[service], ss.GetSpans()...)
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func TestRelayExportsTracesOverOTLPHTTP(t *testing.T) {
	t.Parallel()
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7" // the span the event was enqueued under
	)
	b := sqliteBackend(t)
	store := migrated(t, b)
	e := outbox.NewEvent("order.created", "o-1", "alice")
	e.Metadata = map[string]string{outbox.MetadataTraceparent: "00-" + traceID + "-" + spanID + "-01"}
	if err := store.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	var received string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received = r.Header.Get("traceparent")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()
	col := newCollector(t)

	env := Env{Getenv: func(k string) string {
		return map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": col.srv.URL,
			"OTEL_SERVICE_NAME":           "relay-under-test",
		}[k]
	}}
	r := runEnv(t, env, "relay", "--dsn", b.dsn, "--sink", sink.URL, "--once")
	if r.code != 0 || !strings.Contains(r.stderr, "exporting traces") {
		t.Fatalf("relay --once: %v", r)
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	spans := col.spans["relay-under-test"]
	if len(spans) != 1 {
		t.Fatalf("collector got spans %v, want one from service relay-under-test", col.spans)
	}
	s := spans[0]
	if s.GetName() != "deliver order.created" || s.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER {
		t.Errorf("span %q of kind %v, want deliver order.created, consumer", s.GetName(), s.GetKind())
	}
	if hex.EncodeToString(s.GetTraceId()) != traceID || hex.EncodeToString(s.GetParentSpanId()) != spanID {
		t.Errorf("span in trace %x under %x, want trace %s under the enqueue's span %s", s.GetTraceId(), s.GetParentSpanId(), traceID, spanID)
	}
	if want := "00-" + traceID + "-" + hex.EncodeToString(s.GetSpanId()) + "-01"; received != want {
		t.Errorf("sink got traceparent %q, want the attempt span's %q", received, want)
	}
}

func TestTracingWanted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		flag    bool
		env     map[string]string
		want    bool
		wantErr string
	}{
		{name: "nothing set", want: false},
		{name: "flag", flag: true, want: true},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, want: true},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, want: true},
		{name: "exporter otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{name: "exporter none wins", flag: true, env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, want: false},
		{name: "sdk disabled wins", flag: true, env: map[string]string{"OTEL_SDK_DISABLED": "true"}, want: false},
		{name: "grpc", flag: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: true},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: "OTEL_TRACES_EXPORTER"},
		{name: "unknown protocol", flag: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tracingWanted(tt.flag, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("tracingWanted = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// A relay running as a daemon flushes its spans when it is stopped.
func TestRelayDaemonFlushesSpansOnStop(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	var events []*outbox.Event
	for i := range 5 {
		events = append(events, outbox.NewEvent("order.created", "o-"+string(rune('a'+i)), "alice"))
	}
	if err := store.Enqueue(context.Background(), time.Now(), events...); err != nil {
		t.Fatal(err)
	}
	sink := newAcceptAll(t)
	col := newCollector(t)
	done := newOutcomes(len(events))
	env := Env{observer: done, Getenv: func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": col.srv.URL + "/v1/traces"}[k]
	}}
	d := startRelay(t, env, "--dsn", b.dsn, "--sink", sink.srv.URL, "--poll-interval", "1h")
	waitClosed(t, done.all, "five deliveries")
	if r := d.stop(t); r.code != 0 {
		t.Fatalf("relay: %v", r)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if got := len(col.spans[defaultServiceName]); got != len(events) {
		t.Fatalf("collector got %d spans from %s, want one per delivery (%d); all: %v", got, defaultServiceName, len(events), col.spans)
	}
}
