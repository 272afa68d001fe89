package oteloutbox_test

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sqlite"
)

// TestOneTraceThroughTheLogAndTheTable: on the log layout, an event appended in the
// use case's span is delivered by the log relay, whose first attempt fails and moves
// the event to the events table, and then by the Processor there. Both attempts are
// spans of the use case's trace, children of the create span, numbered 1 and 2, and
// each receiver span is the child of its attempt: the trace context travels in the
// log's metadata and moves with the event. The relay is instrumented as a Processor
// is, by passing the Config's Observers that Instrument adds on to the relay.
func TestOneTraceThroughTheLogAndTheTable(t *testing.T) {
	r := newRecording(t, oteloutbox.Config{})
	ctx := context.Background()
	s := r.store(t)
	if _, err := sqlite.MigrateLog(ctx, s.DB()); err != nil {
		t.Fatal(err)
	}
	l, err := sqlite.NewLog(ctx, s.DB(), sqlite.LogConfig{OnEnqueue: r.tr.EnqueueHook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := receiver(t, r.tp, http.StatusServiceUnavailable) // the relay's attempt fails, the table's lands
	sink, err := httpsink.New(httpsink.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}

	e := outbox.NewEvent("entry.saved", "entry-1", "user-1")
	ctx, span := r.tp.Tracer("app").Start(ctx, "save entry")
	if err := l.Transact(ctx, func(tx *sql.Tx) error { return l.AppendTx(ctx, tx, e) }); err != nil {
		t.Fatal(err)
	}
	span.End()
	ctx = context.Background()

	clock := outboxtest.NewClock(time.Now())
	var cfg outbox.Config
	handler := r.tr.Instrument(&cfg, sink)
	relay, err := sqlite.NewLogRelay(ctx, l, s, handler, sqlite.LogRelayConfig{Clock: clock, Logger: discard, Observers: cfg.Observers})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := relay.Drain(ctx); err != nil || st.Failed != 1 {
		t.Fatalf("relay: %+v, %v; want the event failed and moved", st, err)
	}
	p := newProcessor(t, r, s, sink, outbox.Config{Clock: clock})
	clock.Advance(time.Minute) // past the first backoff
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, e.ID); err != nil || got.Status != outbox.StatusCompleted {
		t.Fatalf("event after the table's retry: %+v, %v; want completed", got, err)
	}

	create := r.one(t, "create entry.saved")
	attempts := r.named("deliver entry.saved")
	received := r.named("receive")
	if len(attempts) != 2 || len(received) != 2 {
		t.Fatalf("want 2 attempt spans and 2 receiver spans, got %v", spanNames(r.rec.Ended()))
	}
	for _, sp := range r.rec.Ended() {
		if sp.SpanContext().TraceID() != span.SpanContext().TraceID() {
			t.Errorf("span %q is in trace %s, want the use case's %s", sp.Name(), sp.SpanContext().TraceID(), span.SpanContext().TraceID())
		}
	}
	for i, a := range attempts {
		if a.Parent().SpanID() != create.SpanContext().SpanID() {
			t.Errorf("attempt %d's parent = %s, want the create span", i+1, a.Parent().SpanID())
		}
		if got := attr(a, oteloutbox.AttemptKey).AsInt64(); got != int64(i+1) {
			t.Errorf("attempt span %d has outbox.attempt %d", i+1, got)
		}
		if received[i].Parent().SpanID() != a.SpanContext().SpanID() {
			t.Errorf("receiver span %d's parent = %s, want attempt %d's span", i+1, received[i].Parent().SpanID(), i+1)
		}
	}
	if got := attr(attempts[0], oteloutbox.OutcomeKey).AsString(); got != "retry" {
		t.Errorf("the relay's attempt: outcome %q, want retry (its span ended by the relay's observer)", got)
	}
	if got := attr(attempts[1], oteloutbox.OutcomeKey).AsString(); got != "delivered" {
		t.Errorf("the table's attempt: outcome %q, want delivered", got)
	}
}
