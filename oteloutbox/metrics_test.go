package oteloutbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/oteloutbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// collect reads every data point: sums and gauges by instrument name and attribute
// value, histograms by their count.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value(oteloutbox.EventTypeKey)
					pts[v.AsString()] += float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value(oteloutbox.EventStatusKey)
					pts[v.AsString()] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					pts[""] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value(oteloutbox.EventTypeKey)
					pts[v.AsString()] += float64(p.Count)
				}
			}
			out[m.Name] = pts
		}
	}
	return out
}

func TestMetricsCountWhatTheProcessorDid(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	clock := outboxtest.NewClock(time.Now())
	m, err := oteloutbox.NewMetrics(oteloutbox.MetricsConfig{MeterProvider: mp, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := sqlitetest.NewStore(t)
	if err := s.Enqueue(ctx, clock.Now(),
		outbox.NewEvent("entry.saved", "a", ""), outbox.NewEvent("entry.saved", "b", ""),
		outbox.NewEvent("entry.deleted", "c", ""), outbox.NewEvent("no.handler", "d", "")); err != nil {
		t.Fatal(err)
	}
	failOnce := true
	handlers := outbox.Handlers{
		"entry.saved": outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		"entry.deleted": outbox.HandlerFunc(func(context.Context, outbox.Event) error {
			if failOnce {
				failOnce = false
				return context.DeadlineExceeded
			}
			return nil
		}),
	}
	p, err := outbox.NewProcessor(s, handlers, outbox.Config{Clock: clock, Observers: []outbox.Observer{m}, Logger: discard, MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(ctx, s); err != nil {
		t.Fatal(err)
	}
	got := collect(t, reader)
	checks := []struct {
		metric, key string
		want        float64
	}{
		{"outbox.events.delivered", "entry.saved", 2},
		{"outbox.events.failed", "entry.deleted", 1},
		{"outbox.events.given_up", "no.handler", 1},
		{"outbox.events.claimed", "", 4},
		{"outbox.delivery.duration", "entry.saved", 2},
		{"outbox.claim.duration", "", 2}, // the batch, then the empty claim that ends Drain
		{"outbox.events.stored", "completed", 2},
		{"outbox.events.stored", "failed", 1},
		{"outbox.events.stored", "given_up", 1},
		{"outbox.events.stored", "pending", 0},
	}
	for _, c := range checks {
		if v, ok := got[c.metric][c.key]; !ok || v != c.want {
			t.Errorf("%s{%s} = %v (recorded: %v), want %v", c.metric, c.key, v, ok, c.want)
		}
	}
	if got["outbox.stats.last_refresh"][""] != float64(clock.Now().UnixNano())/1e9 {
		t.Errorf("last refresh = %v, want the clock's now", got["outbox.stats.last_refresh"])
	}
}

func TestMetricsConfigRefusesNegativeStaleAfter(t *testing.T) {
	_, err := oteloutbox.NewMetrics(oteloutbox.MetricsConfig{StaleAfter: -time.Second})
	var fe *outbox.FieldError
	if !errors.As(err, &fe) || fe.Field != "oteloutbox.MetricsConfig.StaleAfter" {
		t.Fatalf("err = %v, want a FieldError naming StaleAfter", err)
	}
}
