// Package oteloutbox traces events through the outbox with OpenTelemetry: from the
// span an event is enqueued under, through every delivery attempt, to the receiver.
//
// Three pieces wire it in. EnqueueHook, set as a store's Config.OnEnqueue, records at
// every enqueue the trace context of the enqueueing ctx in the event's Metadata
// (traceparent, tracestate, baggage), under a short "create" span. Instrument wraps a
// processor's Handler and adds an Observer so that each delivery attempt is a "deliver"
// span, a child of the create span, whose context the sinks forward to the receiver.
// NewMetrics is an outbox.Observer recording the processor's metrics through the
// OpenTelemetry metrics API, an alternative to package metrics' Prometheus collectors.
//
//	tr := oteloutbox.New(oteloutbox.Config{})
//	store, err := sqlite.New(ctx, db, sqlite.Config{OnEnqueue: tr.EnqueueHook})
//	cfg := outbox.Config{}
//	handler := tr.Instrument(&cfg, sink)
//	p, err := outbox.NewProcessor(store, handler, cfg)
//
// The core outbox package imports no OpenTelemetry code; only this package does.
package oteloutbox

import (
	"context"
	"maps"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
)

// ScopeName is the instrumentation scope of the spans and metrics this package makes.
const ScopeName = "github.com/fitiq/outbox/oteloutbox"

// System is the messaging.system attribute of every span.
const System = "outbox"

// Attribute keys this package adds beside the messaging semantic conventions.
const (
	// AttemptKey is the delivery attempt number: 1 for the first, 2 for the first retry.
	AttemptKey = attribute.Key("outbox.attempt")
	// OutcomeKey is what became of an attempt: delivered, retry, given_up or released.
	OutcomeKey = attribute.Key("outbox.outcome")
	// EntityIDKey is the ID of the entity the event is about.
	EntityIDKey = attribute.Key("outbox.entity_id")
)

// Names of the span events marking what happened to an attempt besides its outcome.
const (
	// EventGivenUp marks an attempt after which the event will not be tried again.
	EventGivenUp = "outbox.given_up"
	// EventLeaseLost marks an attempt whose event another processor took over while it
	// ran: its outcome will not be recorded.
	EventLeaseLost = "outbox.lease_lost"
)

// Config tunes a Tracing. The zero value uses the global providers.
type Config struct {
	// TracerProvider makes the spans. Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator writes the trace context into events and reads it back. Defaults to
	// the global one (otel.GetTextMapPropagator()), or, while none is set, to W3C Trace
	// Context with Baggage: the metadata keys are those formats' header names.
	Propagator propagation.TextMapPropagator
	// RoundTrips adds a span for every claim and every settle of a processor: two
	// store round trips per batch, worth seeing when chasing latency, too many to keep
	// otherwise. Defaults to false.
	RoundTrips bool
}

// Tracing makes the outbox's spans. It is safe for concurrent use; one Tracing may
// serve every store and processor of a process.
type Tracing struct {
	cfg    Config
	tracer trace.Tracer
	w3c    propagation.TextMapPropagator

	// inflight holds the span of each attempt between the handler's start and the
	// processor's report of its outcome.
	inflight sync.Map // attemptKey → trace.Span
}

type attemptKey struct {
	id      string
	attempt int
}

// New returns a Tracing configured by cfg.
func New(cfg Config) *Tracing {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Tracing{
		cfg:    cfg,
		tracer: tp.Tracer(ScopeName),
		w3c:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
}

func (t *Tracing) propagator() propagation.TextMapPropagator {
	if t.cfg.Propagator != nil {
		return t.cfg.Propagator
	}
	if p := otel.GetTextMapPropagator(); len(p.Fields()) > 0 {
		return p
	}
	return t.w3c
}

// EnqueueHook is an outbox.EnqueueHook. When ctx carries a span (or baggage) it starts
// and ends a producer span "create <type>", child of ctx's span, and returns e's
// metadata with that span's context added under traceparent, tracestate and baggage. An event whose
// metadata already holds a traceparent keeps it: its caller chose the parent. Without a
// span in ctx it returns after two context lookups.
func (t *Tracing) EnqueueHook(ctx context.Context, e outbox.Event) map[string]string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return nil
	}
	if _, ok := e.Metadata[outbox.MetadataTraceparent]; ok {
		return nil
	}
	if sc.IsValid() {
		var span trace.Span
		ctx, span = t.tracer.Start(ctx, "create "+e.Type,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				semconv.MessagingSystemKey.String(System),
				semconv.MessagingOperationTypeCreate,
				semconv.MessagingOperationName("create"),
				semconv.MessagingDestinationName(e.Type),
				semconv.MessagingMessageID(e.ID),
				EntityIDKey.String(e.EntityID),
			))
		// The span marks the moment of the write; the transaction may still roll back.
		span.End()
	}
	// A new map: the caller may share one Metadata map between events.
	md := make(map[string]string, len(e.Metadata)+3)
	maps.Copy(md, e.Metadata)
	t.propagator().Inject(ctx, propagation.MapCarrier(md))
	if len(md) == 0 {
		return nil
	}
	return md
}

// Instrument returns handler wrapped so that every delivery attempt is a span, and
// puts first in cfg.Observers an observer that ends those spans with their outcome (and
// adds the claim and settle spans when Config.RoundTrips is set); the observers already
// there keep being told everything by the processor, after the span is done, so that
// one of them that reads the spans finds them complete. Pass the returned handler and cfg to
// outbox.NewProcessor. A BatchHandler stays a BatchHandler.
//
// Each attempt's span, "deliver <type>" of kind consumer, is a child of the create span
// stored in the event, so that every attempt, however late, is in the trace of the
// write that caused it. The handler sees the event with its trace metadata replaced by
// the attempt span's context, which the sinks forward: the receiver's span is then a
// child of the attempt that reached it.
func (t *Tracing) Instrument(cfg *outbox.Config, handler outbox.Handler) outbox.Handler {
	cfg.Observers = append([]outbox.Observer{&observer{t: t}}, cfg.Observers...)
	h := &tracedHandler{t: t, next: handler}
	if bh, ok := handler.(outbox.BatchHandler); ok {
		return &tracedBatchHandler{tracedHandler: h, batch: bh}
	}
	return h
}

// startAttempt starts the span of one delivery attempt of e and returns the handler's
// context and the event as the handler should see it.
func (t *Tracing) startAttempt(ctx context.Context, e outbox.Event) (context.Context, outbox.Event, trace.Span) {
	prop := t.propagator()
	if len(e.Metadata) > 0 {
		ctx = prop.Extract(ctx, propagation.MapCarrier(e.Metadata))
	}
	ctx, span := t.tracer.Start(ctx, "deliver "+e.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(System),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("deliver"),
			semconv.MessagingDestinationName(e.Type),
			semconv.MessagingMessageID(e.ID),
			EntityIDKey.String(e.EntityID),
			AttemptKey.Int(e.Attempts),
		))
	t.inflight.Store(attemptKey{e.ID, e.Attempts}, span)

	md := make(map[string]string, len(e.Metadata)+3)
	maps.Copy(md, e.Metadata)
	for _, k := range outbox.TraceMetadataKeys {
		delete(md, k)
	}
	prop.Inject(ctx, propagation.MapCarrier(md))
	e.Metadata = md
	return ctx, e, span
}

type tracedHandler struct {
	t    *Tracing
	next outbox.Handler
}

func (h *tracedHandler) Handle(ctx context.Context, e outbox.Event) error {
	ctx, e, span := h.t.startAttempt(ctx, e)
	err := h.next.Handle(ctx, e)
	if err != nil {
		span.RecordError(err)
	}
	return err
}

type tracedBatchHandler struct {
	*tracedHandler
	batch outbox.BatchHandler
}

func (h *tracedBatchHandler) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	seen := make([]outbox.Event, len(events))
	spans := make([]trace.Span, len(events))
	for i, e := range events {
		_, seen[i], spans[i] = h.t.startAttempt(ctx, e)
	}
	errs := h.batch.HandleBatch(ctx, seen)
	for i, err := range errs {
		if err != nil && i < len(spans) {
			spans[i].RecordError(err)
		}
	}
	return errs
}

// observer ends attempt spans with their outcome.
type observer struct{ t *Tracing }

var (
	_ outbox.SettleObserver = (*observer)(nil)
	_ outbox.LeaseObserver  = (*observer)(nil)
)

func (o *observer) ObserveClaim(n int, d time.Duration) {
	if o.t.cfg.RoundTrips {
		o.t.roundTrip("claim", semconv.MessagingOperationTypeReceive, n, d, nil)
	}
}

func (o *observer) ObserveDelivery(e outbox.Event, out outbox.Outcome, d time.Duration) {
	if v, ok := o.t.inflight.LoadAndDelete(attemptKey{e.ID, e.Attempts}); ok {
		span := v.(trace.Span)
		switch {
		case out.Result == outbox.Delivered:
			span.SetAttributes(OutcomeKey.String("delivered"))
		case out.Result == outbox.Released:
			span.SetAttributes(OutcomeKey.String("released"))
		case out.Result == outbox.Failed && out.NextAttemptAt.IsZero():
			span.SetAttributes(OutcomeKey.String("given_up"))
			span.SetStatus(codes.Error, out.Error)
			span.AddEvent(EventGivenUp, trace.WithAttributes(attribute.String("outbox.error", out.Error)))
		default:
			span.SetAttributes(OutcomeKey.String("retry"),
				attribute.String("outbox.next_attempt_at", out.NextAttemptAt.UTC().Format(time.RFC3339Nano)))
			span.SetStatus(codes.Error, out.Error)
		}
		span.End()
	}
}

func (o *observer) ObserveSettle(n int, d time.Duration, err error) {
	if o.t.cfg.RoundTrips {
		o.t.roundTrip("settle", semconv.MessagingOperationTypeSettle, n, d, err)
	}
}

func (o *observer) ObserveLeaseLost(ids []string) {
	lost := make(map[string]bool, len(ids))
	for _, id := range ids {
		lost[id] = true
	}
	o.t.inflight.Range(func(k, v any) bool {
		if lost[k.(attemptKey).id] {
			v.(trace.Span).AddEvent(EventLeaseLost)
		}
		return true
	})
}

// roundTrip records a store round trip that has just ended after d, as a root span:
// it serves a batch of events from many traces.
func (t *Tracing) roundTrip(name string, op attribute.KeyValue, n int, d time.Duration, err error) {
	end := time.Now()
	_, span := t.tracer.Start(context.Background(), name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(end.Add(-d)),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(System),
			op,
			semconv.MessagingOperationName(name),
			semconv.MessagingBatchMessageCount(n),
		))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End(trace.WithTimestamp(end))
}
