package oteloutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/sqlite"
)

// One event traced from the write that caused it to its delivery: the use case's span,
// the event's create span under it, and the delivery attempt under that.
func Example() {
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	dir, _ := os.MkdirTemp("", "oteloutbox-example")
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		panic(err)
	}
	tr := oteloutbox.New(oteloutbox.Config{TracerProvider: tp})
	store, err := sqlite.New(ctx, db, sqlite.Config{OnEnqueue: tr.EnqueueHook}) // this store records the enqueueing trace
	if err != nil {
		panic(err)
	}

	// The application's use case: its span, and the event written in its transaction.
	uctx, span := tp.Tracer("app").Start(ctx, "place order")
	err = store.Transact(uctx, func(tx *sql.Tx) error {
		return store.EnqueueTx(uctx, tx, outbox.NewEvent("order.placed", "order-1", ""))
	})
	span.End()
	if err != nil {
		panic(err)
	}

	// The relay: the handler and the processor's observer instrumented together.
	cfg := outbox.Config{Logger: slog.New(slog.DiscardHandler)}
	handler := tr.Instrument(&cfg, outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		fmt.Println("handler sees a traceparent:", e.Metadata[outbox.MetadataTraceparent] != "")
		return nil
	}))
	p, err := outbox.NewProcessor(store, handler, cfg)
	if err != nil {
		panic(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		panic(err)
	}

	names := map[string]string{}
	for _, s := range rec.Ended() {
		names[s.SpanContext().SpanID().String()] = s.Name()
	}
	for _, s := range rec.Ended() { // in the order they ended
		fmt.Printf("%s (parent: %s)\n", s.Name(), names[s.Parent().SpanID().String()])
	}
	// Output:
	// handler sees a traceparent: true
	// create order.placed (parent: place order)
	// place order (parent: )
	// deliver order.placed (parent: create order.placed)
}
