package oteloutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// benchModes are the three costs of the enqueue hook: none set (a program that does
// not trace), set but run under a context without a span, and tracing on (a sampled
// span per write, its create span exported to a no-op exporter).
func benchModes(b *testing.B, run func(b *testing.B, ctx context.Context, hook outbox.EnqueueHook)) {
	for _, mode := range []string{"hook=none", "hook=on/no-span", "hook=on/span"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			var hook outbox.EnqueueHook
			if mode != "hook=none" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				hook = oteloutbox.New(oteloutbox.Config{TracerProvider: tp}).EnqueueHook
				if mode == "hook=on/span" {
					c, s := tp.Tracer("bench").Start(ctx, "use case")
					b.Cleanup(func() { s.End() })
					ctx = c
				}
			}
			run(b, ctx, hook)
		})
	}
}

// BenchmarkOnEnqueue is the hook alone, per event; "baseline" builds the event
// without calling it.
func BenchmarkOnEnqueue(b *testing.B) {
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := outbox.Event{ID: "0190f4c2-0000-7000-8000-000000000000", Type: "order.created", EntityID: "o-1"}
			sinkEvent = e.ID
		}
	})
	benchModes(b, func(b *testing.B, ctx context.Context, hook outbox.EnqueueHook) {
		b.ReportAllocs()
		for b.Loop() {
			e := outbox.Event{ID: "0190f4c2-0000-7000-8000-000000000000", Type: "order.created", EntityID: "o-1"}
			hook.Run(ctx, &e)
			sinkEvent = e.ID
		}
	})
}

// BenchmarkEnqueueTx is one event written in its own transaction on SQLite, hook
// included: what a use case pays.
func BenchmarkEnqueueTx(b *testing.B) {
	benchModes(b, func(b *testing.B, ctx context.Context, hook outbox.EnqueueHook) {
		s := sqlitetest.NewStoreConfig(b, sqlite.Config{OnEnqueue: hook})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			e := outbox.NewEvent("order.created", fmt.Sprintf("o-%d", i), "u")
			if err := s.Transact(ctx, func(tx *sql.Tx) error { return s.EnqueueTx(ctx, tx, e) }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// sinkEvent keeps the compiler from dropping the event built in a loop.
var sinkEvent string
