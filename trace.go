package outbox

import (
	"context"
	"log/slog"
)

// The Event.Metadata keys that carry the trace an event was enqueued under, in the W3C
// Trace Context and Baggage formats. They are ordinary metadata: every store keeps
// them and every sink forwards them (as headers, where the transport has them), so
// that a receiver can continue the trace. The core only reads traceparent, to put the
// trace ID on its log lines; writing them is an EnqueueHook's job (see oteloutbox).
const (
	MetadataTraceparent = "traceparent"
	MetadataTracestate  = "tracestate"
	MetadataBaggage     = "baggage"
)

// TraceMetadataKeys lists the trace metadata keys, in the order sinks forward them.
var TraceMetadataKeys = [...]string{MetadataTraceparent, MetadataTracestate, MetadataBaggage}

// EnqueueHook adds what the enqueueing context knows to an event about to be written,
// such as the trace it is enqueued under. A store runs the hook of its own Config
// (sqlite.Config.OnEnqueue, postgres.Config.OnEnqueue, …) inside every enqueue, after
// Event.Prepare, once per event, and stores the metadata it returns in place of
// e.Metadata, or e.Metadata as it is when it returns nil. It must not write into
// e.Metadata (the caller may share one map between events) and must be safe for
// concurrent use. Two stores in one process may have different hooks, or none.
//
// It gets the event by value and can change nothing else: that also keeps the
// caller's event where the compiler put it (on the stack, often) when no hook is set.
type EnqueueHook func(ctx context.Context, e Event) (metadata map[string]string)

// Run runs h on e; a nil hook does nothing. Store implementations call it once per
// event, right after Prepare succeeds and before encoding the event's Metadata:
//
//	if err := e.Prepare(now, maxPayloadBytes); err != nil { … }
//	s.cfg.OnEnqueue.Run(ctx, e)
func (h EnqueueHook) Run(ctx context.Context, e *Event) {
	if h == nil {
		return
	}
	if md := h(ctx, *e); md != nil {
		e.Metadata = md
	}
}

// traceAttrs returns the trace_id and span_id log attributes of an event whose
// metadata holds a well-formed version-00 traceparent ("00-<trace>-<span>-<flags>"),
// so that log lines about it join its trace; nil otherwise.
func traceAttrs(e *Event) []any {
	tp := e.Metadata[MetadataTraceparent]
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return nil
	}
	traceID, spanID := tp[3:35], tp[36:52]
	if !isHex(traceID) || !isHex(spanID) {
		return nil
	}
	return []any{slog.String("trace_id", traceID), slog.String("span_id", spanID)}
}

func isHex(s string) bool {
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
