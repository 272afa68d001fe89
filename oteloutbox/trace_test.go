package oteloutbox_test

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// The tests of this package install the process-wide enqueue hook, so none runs in
// parallel with another.

var discard = slog.New(slog.DiscardHandler)

var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// recording is a tracer provider whose ended spans the test reads.
type recording struct {
	tp  *sdktrace.TracerProvider
	rec *tracetest.SpanRecorder
	tr  *oteloutbox.Tracing
}

func newRecording(t *testing.T, cfg oteloutbox.Config) *recording {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg.TracerProvider = tp
	tr := oteloutbox.New(cfg)
	return &recording{tp: tp, rec: rec, tr: tr}
}

// store returns a fresh store whose enqueues record their trace through r.
func (r *recording) store(t *testing.T) *sqlite.Store {
	t.Helper()
	return sqlitetest.NewStoreConfig(t, sqlite.Config{OnEnqueue: r.tr.EnqueueHook})
}

// named returns the ended spans called name, in the order they ended.
func (r *recording) named(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (r *recording) one(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	spans := r.named(name)
	if len(spans) != 1 {
		t.Fatalf("want one span %q, got %d (all: %v)", name, len(spans), spanNames(r.rec.Ended()))
	}
	return spans[0]
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name()
	}
	return names
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// receiver is an HTTP endpoint that continues the trace of each request it gets, and
// answers with the statuses it is given, then 200.
func receiver(t *testing.T, tp trace.TracerProvider, statuses ...int) *httptest.Server {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := w3c.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		_, span := tp.Tracer("receiver").Start(ctx, "receive", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if n := int(calls.Add(1)); n <= len(statuses) {
			w.WriteHeader(statuses[n-1])
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// useCase is an application's write: a span around a transaction that enqueues the
// event beside its data.
func useCase(t *testing.T, tp trace.TracerProvider, s *sqlite.Store, e *outbox.Event) trace.SpanContext {
	t.Helper()
	ctx, span := tp.Tracer("app").Start(context.Background(), "save entry")
	defer span.End()
	if err := s.Transact(ctx, func(tx *sql.Tx) error { return s.EnqueueTx(ctx, tx, e) }); err != nil {
		t.Fatal(err)
	}
	return span.SpanContext()
}

func newProcessor(t *testing.T, r *recording, s outbox.Store, h outbox.Handler, cfg outbox.Config) *outbox.Processor {
	t.Helper()
	cfg.Logger = discard
	handler := r.tr.Instrument(&cfg, h)
	p, err := outbox.NewProcessor(s, handler, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOneTraceFromUseCaseThroughRetryToReceiver(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	ctx := context.Background()
	s := r.store(t)
	srv := receiver(t, r.tp, http.StatusServiceUnavailable) // the first attempt fails, the retry lands
	sink, err := httpsink.New(httpsink.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := outbox.NewEvent("entry.saved", "entry-1", "user-1")
	parent := useCase(t, r.tp, s, e)

	stored, err := s.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	create := r.one(t, "create entry.saved")
	if got, want := stored.Metadata[outbox.MetadataTraceparent], "00-"+create.SpanContext().TraceID().String()+"-"+create.SpanContext().SpanID().String()+"-01"; got != want {
		t.Fatalf("stored traceparent = %q, want the create span's %q", got, want)
	}

	clock := outboxtest.NewClock(time.Now())
	p := newProcessor(t, r, s, sink, outbox.Config{Clock: clock})
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute) // past the first backoff
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, e.ID); got.Status != outbox.StatusCompleted {
		t.Fatalf("event is %s after the retry, want completed", got.Status)
	}

	useCaseSpan := r.one(t, "save entry")
	attempts := r.named("deliver entry.saved")
	received := r.named("receive")
	if len(attempts) != 2 || len(received) != 2 {
		t.Fatalf("want 2 attempt spans and 2 receiver spans, got %v", spanNames(r.rec.Ended()))
	}
	for _, s := range r.rec.Ended() {
		if s.SpanContext().TraceID() != parent.TraceID() {
			t.Errorf("span %q is in trace %s, want the use case's %s", s.Name(), s.SpanContext().TraceID(), parent.TraceID())
		}
	}
	if create.Parent().SpanID() != useCaseSpan.SpanContext().SpanID() {
		t.Errorf("create span's parent = %s, want the use case span", create.Parent().SpanID())
	}
	for i, a := range attempts {
		if a.Parent().SpanID() != create.SpanContext().SpanID() {
			t.Errorf("attempt %d's parent = %s, want the create span", i+1, a.Parent().SpanID())
		}
		if got := attr(a, oteloutbox.AttemptKey).AsInt64(); got != int64(i+1) {
			t.Errorf("attempt span %d has outbox.attempt %d", i+1, got)
		}
		if got := attr(a, "messaging.message.id").AsString(); got != e.ID {
			t.Errorf("attempt span %d has messaging.message.id %q, want %q", i+1, got, e.ID)
		}
		if received[i].Parent().SpanID() != a.SpanContext().SpanID() {
			t.Errorf("receiver span %d's parent = %s, want attempt %d's span", i+1, received[i].Parent().SpanID(), i+1)
		}
	}
	if got := attr(attempts[0], oteloutbox.OutcomeKey).AsString(); got != "retry" || attempts[0].Status().Code != codes.Error {
		t.Errorf("first attempt: outcome %q, status %v; want retry, error", got, attempts[0].Status())
	}
	if got := attr(attempts[1], oteloutbox.OutcomeKey).AsString(); got != "delivered" || attempts[1].Status().Code == codes.Error {
		t.Errorf("second attempt: outcome %q, status %v; want delivered, not an error", got, attempts[1].Status())
	}
	if attr(attempts[1], "messaging.system").AsString() != "outbox" || attempts[1].SpanKind() != trace.SpanKindConsumer {
		t.Errorf("attempt span: messaging.system %q, kind %v", attr(attempts[1], "messaging.system").AsString(), attempts[1].SpanKind())
	}
}

func TestGivenUpAttemptShowsItsError(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	ctx := context.Background()
	s := r.store(t)
	srv := receiver(t, r.tp, http.StatusUnprocessableEntity) // a 4xx: permanent
	sink, err := httpsink.New(httpsink.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := outbox.NewEvent("entry.saved", "entry-1", "user-1")
	useCase(t, r.tp, s, e)
	p := newProcessor(t, r, s, sink, outbox.Config{Clock: outboxtest.NewClock(time.Now())})
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Get(ctx, e.ID)
	if !stored.GivenUp() {
		t.Fatalf("event is %s, want given up", stored.Status)
	}
	a := r.one(t, "deliver entry.saved")
	if a.Status().Code != codes.Error || a.Status().Description != stored.LastError {
		t.Errorf("status = %v, want error %q", a.Status(), stored.LastError)
	}
	if got := attr(a, oteloutbox.OutcomeKey).AsString(); got != "given_up" {
		t.Errorf("outcome = %q, want given_up", got)
	}
	if !hasEvent(a, oteloutbox.EventGivenUp) || !hasEvent(a, "exception") {
		t.Errorf("span events = %v, want %s and the recorded exception", a.Events(), oteloutbox.EventGivenUp)
	}
}

func TestEnqueueWithoutSpanStoresNoTraceContext(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	s := r.store(t)
	e := outbox.NewEvent("entry.saved", "entry-1", "")
	e.Metadata = map[string]string{"source": "test"}
	if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Metadata) != 1 || got.Metadata["source"] != "test" {
		t.Fatalf("metadata = %v, want only the caller's", got.Metadata)
	}
}

func TestEnqueueKeepsCallersMapAndTraceparent(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	s := r.store(t)
	ctx, span := r.tp.Tracer("app").Start(context.Background(), "batch import")
	defer span.End()
	shared := map[string]string{"source": "import"}
	a, b := outbox.NewEvent("entry.saved", "a", ""), outbox.NewEvent("entry.saved", "b", "")
	a.Metadata, b.Metadata = shared, shared
	explicit := outbox.NewEvent("entry.saved", "c", "")
	explicit.Metadata = map[string]string{outbox.MetadataTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	if err := s.Enqueue(ctx, time.Now(), a, b, explicit); err != nil {
		t.Fatal(err)
	}
	if len(shared) != 1 {
		t.Errorf("the caller's shared map was written into: %v", shared)
	}
	if a.Metadata[outbox.MetadataTraceparent] == b.Metadata[outbox.MetadataTraceparent] {
		t.Errorf("two events share one create span context: %q", a.Metadata[outbox.MetadataTraceparent])
	}
	got, _ := s.Get(context.Background(), explicit.ID)
	if got.Metadata[outbox.MetadataTraceparent] != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("explicit traceparent replaced: %v", got.Metadata)
	}
}

func TestRoundTripSpansWhenAsked(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{RoundTrips: true})
	s := r.store(t)
	e := outbox.NewEvent("entry.saved", "entry-1", "")
	useCase(t, r.tp, s, e)
	p := newProcessor(t, r, s, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }), outbox.Config{})
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	claim, settle := r.one(t, "claim"), r.one(t, "settle")
	if got := attr(claim, "messaging.batch.message_count").AsInt64(); got != 1 {
		t.Errorf("claim span counts %d messages, want 1", got)
	}
	if got := attr(settle, "messaging.batch.message_count").AsInt64(); got != 1 {
		t.Errorf("settle span counts %d messages, want 1", got)
	}
}

// leaseWatcher is the Observer already configured before Instrument: it keeps being
// told, and tells the test when a lease is lost. The processor tells its observers in
// order, this one first: told once, it would let the handler return before the tracing
// observer behind it had marked the attempt's span. It closes lost when told the
// second time, by the next renewal, which begins only after the first has told every
// observer.
type leaseWatcher struct {
	reports   atomic.Int32
	lost      chan struct{}
	delivered atomic.Int32
}

func (w *leaseWatcher) ObserveClaim(int, time.Duration) {}
func (w *leaseWatcher) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {
	w.delivered.Add(1)
}
func (w *leaseWatcher) ObserveLeaseLost([]string) {
	if w.reports.Add(1) == 2 {
		close(w.lost)
	}
}

func TestLeaseLossIsASpanEvent(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	ctx := context.Background()
	s := r.store(t)
	e := outbox.NewEvent("entry.saved", "entry-1", "")
	useCase(t, r.tp, s, e)

	start := time.Now()
	watcher := &leaseWatcher{lost: make(chan struct{})}
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		// Another processor takes the event over, as if this one had stalled past its lease.
		if _, err := s.Claim(ctx, outbox.ClaimParams{Owner: "other", Now: start.Add(time.Hour), LeaseUntil: start.Add(2 * time.Hour), Limit: 1}); err != nil {
			return err
		}
		select {
		case <-watcher.lost: // this processor's renewals found out, and told every observer
			return nil
		case <-time.After(10 * time.Second):
			t.Error("the lease loss was never reported")
			return nil
		}
	})
	p := newProcessor(t, r, s, handler, outbox.Config{
		Clock:         outboxtest.NewClock(start),
		LeaseDuration: 30 * time.Millisecond, // renewals every 10ms
		// No deadline on the store calls: at a third of this lease it would be 10ms, which
		// a loaded machine's claim can overrun; this test is about the lease, not those.
		RoundTripTimeout: -1,
		Observers:        []outbox.Observer{watcher},
	})
	if _, err := p.ProcessBatch(ctx); err != nil {
		t.Fatal(err)
	}
	a := r.one(t, "deliver entry.saved")
	if !hasEvent(a, oteloutbox.EventLeaseLost) {
		t.Errorf("attempt span events = %v, want %s", a.Events(), oteloutbox.EventLeaseLost)
	}
	if watcher.delivered.Load() != 1 {
		t.Errorf("the Observer configured before Instrument saw %d deliveries, want 1", watcher.delivered.Load())
	}
}
