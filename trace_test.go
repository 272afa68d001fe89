package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// The core names no tracing library: a program that does not trace compiles none.
func TestCoreImportsNoOpenTelemetry(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "go.opentelemetry.io") {
			t.Errorf("the core package depends on %s", dep)
		}
	}
}

func TestAStoresEnqueueHookRunsOnEveryEnqueueOfThatStoreOnly(t *testing.T) {
	t.Parallel()
	type key struct{}
	var seen []string
	hooked := sqlitetest.NewStoreConfig(t, sqlite.Config{OnEnqueue: func(ctx context.Context, e outbox.Event) map[string]string {
		seen = append(seen, e.ID)
		if v, ok := ctx.Value(key{}).(string); ok {
			return map[string]string{"from_ctx": v}
		}
		return nil
	}})
	plain := sqlitetest.NewStore(t)

	ctx := context.WithValue(context.Background(), key{}, "request-7")
	e := outbox.NewEvent("order.created", "o-1", "")
	if err := hooked.Enqueue(ctx, time.Now(), e); err != nil {
		t.Fatal(err)
	}
	got, err := hooked.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != e.ID || got.Metadata["from_ctx"] != "request-7" {
		t.Fatalf("hook saw %v, stored metadata %v; want the event's ID once and from_ctx=request-7", seen, got.Metadata)
	}
	// An invalid event is refused before the hook runs.
	if err := hooked.Enqueue(ctx, time.Now(), outbox.NewEvent("", "o-2", "")); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("enqueue of an event without a type: %v, want ErrInvalid", err)
	}
	// Another store in the same process runs no hook.
	if err := plain.Enqueue(ctx, time.Now(), outbox.NewEvent("order.created", "o-3", "")); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 {
		t.Fatalf("hook ran %d times, want once (not for the invalid event, not for another store's)", len(seen))
	}
}

func TestProcessorLogLinesCarryTheEventsTrace(t *testing.T) {
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name        string
		traceparent string
		want        bool
	}{
		{"well formed", "00-" + traceID + "-" + spanID + "-01", true},
		{"none", "", false},
		{"unknown version", "01-" + traceID + "-" + spanID + "-01", false},
		{"upper case", "00-" + strings.ToUpper(traceID) + "-" + spanID + "-01", false},
		{"short", "00-" + traceID[:30] + "-" + spanID + "-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sqlitetest.NewStore(t)
			e := outbox.NewEvent("order.created", "o-1", "")
			if tt.traceparent != "" {
				e.Metadata = map[string]string{outbox.MetadataTraceparent: tt.traceparent}
			}
			if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			fail := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return errors.New("receiver down") })
			p, err := outbox.NewProcessor(s, fail, outbox.Config{
				Clock:  outboxtest.NewClock(time.Now()),
				Logger: slog.New(slog.NewJSONHandler(&buf, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.ProcessBatch(context.Background()); err != nil {
				t.Fatal(err)
			}
			var line map[string]any
			for l := range strings.Lines(buf.String()) {
				if strings.Contains(l, "will retry") {
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatal(err)
					}
				}
			}
			if line == nil {
				t.Fatalf("no retry log line in:\n%s", buf.String())
			}
			gotTrace, hasTrace := line["trace_id"]
			if tt.want && (gotTrace != traceID || line["span_id"] != spanID) {
				t.Errorf("log line trace_id=%v span_id=%v, want %s %s", gotTrace, line["span_id"], traceID, spanID)
			}
			if !tt.want && hasTrace {
				t.Errorf("log line has trace_id %v for traceparent %q", gotTrace, tt.traceparent)
			}
		})
	}
}
