package backend_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fitiq/outbox/examples/fitiq/backend"
)

// A request carrying a traceparent (an outbox delivery's) is served under a server
// span that continues that trace, named by its route.
func TestRequestContinuesTheCallersTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	db := openSQLite(t)
	if err := db.AddToken(t.Context(), "alice", aliceToken); err != nil {
		t.Fatal(err)
	}
	srv, _ := serve(t, db, backend.Config{Logger: quiet, TracerProvider: tp, Propagator: propagation.TraceContext{}})

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := httptest.NewRequest(http.MethodGet, "/v1/users/alice/progress-entries", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	rr := httptest.NewRecorder()
	srv.ServeHTTP(rr, req) // in this goroutine: the span has ended when it returns
	if rr.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rr.Code, rr.Body)
	}

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("got %d spans, want the request's one", len(spans))
	}
	s := spans[0]
	if s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID || !s.Parent().IsRemote() {
		t.Errorf("span in trace %s under %s (remote %v), want trace %s under the caller's %s",
			s.SpanContext().TraceID(), s.Parent().SpanID(), s.Parent().IsRemote(), traceID, parentID)
	}
	if s.Name() != "GET /v1/users/{user}/{kind}" {
		t.Errorf("span name %q, want the route", s.Name())
	}
}
