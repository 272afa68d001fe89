package cli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox/oteloutbox"
)

// demoTracing holds the demo's spans in memory, for --trace to print one entry's.
type demoTracing struct {
	exp    *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	prop   propagation.TextMapPropagator
	outbox *oteloutbox.Tracing
}

func newDemoTracing() *demoTracing {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	return &demoTracing{exp: exp, tp: tp, prop: prop, outbox: oteloutbox.New(oteloutbox.Config{TracerProvider: tp, Propagator: prop})}
}

// pick chooses the entry whose trace is worth showing: the one whose delivery took
// the most attempts (a retried one shows what the outbox does), the earliest among
// equals. It returns the trace's spans.
func (t *demoTracing) pick() (spans tracetest.SpanStubs) {
	all := t.exp.GetSpans()
	attempts := map[trace.TraceID]int{}
	first := map[trace.TraceID]time.Time{}
	for _, s := range all {
		id := s.SpanContext.TraceID()
		if strings.HasPrefix(s.Name, "deliver ") {
			attempts[id]++
		}
		if f, ok := first[id]; !ok || s.StartTime.Before(f) {
			first[id] = s.StartTime
		}
	}
	var best trace.TraceID
	for id, n := range attempts {
		if n > attempts[best] || (n == attempts[best] && first[id].Before(first[best])) {
			best = id
		}
	}
	for _, s := range all {
		if s.SpanContext.TraceID() == best {
			spans = append(spans, s)
		}
	}
	return spans
}

// printTrace writes spans as a tree: each span under its parent, in start order,
// with its start relative to the trace's first span, its duration and what it tells.
func printTrace(w io.Writer, spans tracetest.SpanStubs) {
	if len(spans) == 0 {
		fmt.Fprintln(w, "no trace recorded")
		return
	}
	slices.SortFunc(spans, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	present := map[trace.SpanID]bool{}
	for _, s := range spans {
		present[s.SpanContext.SpanID()] = true
	}
	children := map[trace.SpanID][]tracetest.SpanStub{}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if p := s.Parent.SpanID(); s.Parent.IsValid() && present[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	t0 := spans[0].StartTime
	fmt.Fprintf(w, "trace %s\n", spans[0].SpanContext.TraceID())
	var walk func(s tracetest.SpanStub, prefix string, last bool, depth int)
	walk = func(s tracetest.SpanStub, prefix string, last bool, depth int) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if depth == 0 {
			branch, next = "", ""
		}
		label := prefix + branch + s.Name
		fmt.Fprintf(w, "%-60s %9s %9s  %s\n", label, "+"+fmtMillis(s.StartTime.Sub(t0)), fmtMillis(s.EndTime.Sub(s.StartTime)), spanNotes(s))
		kids := children[s.SpanContext.SpanID()]
		for i, c := range kids {
			walk(c, prefix+next, i == len(kids)-1, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, "", true, 0)
	}
}

func fmtMillis(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// spanNotes is what a span says besides its name: kind, attempt and outcome, the
// HTTP status, an error.
func spanNotes(s tracetest.SpanStub) string {
	var notes []string
	notes = append(notes, s.SpanKind.String())
	for _, kv := range s.Attributes {
		switch kv.Key {
		case oteloutbox.AttemptKey:
			notes = append(notes, fmt.Sprintf("attempt=%d", kv.Value.AsInt64()))
		case oteloutbox.OutcomeKey:
			notes = append(notes, "outcome="+kv.Value.AsString())
		case "http.response.status_code":
			notes = append(notes, fmt.Sprintf("status=%d", kv.Value.AsInt64()))
		}
	}
	for _, e := range s.Events {
		if e.Name != "exception" {
			notes = append(notes, "event="+e.Name)
		}
	}
	if s.Status.Code == codes.Error {
		// The end of the message says what went wrong ("connection refused", "503"); its
		// start repeats the request.
		msg := cmp.Or(s.Status.Description, "error")
		if r := []rune(msg); len(r) > 60 {
			msg = "…" + string(r[len(r)-60:])
		}
		notes = append(notes, fmt.Sprintf("error=%q", msg))
	}
	return strings.Join(notes, " ")
}
