package metrics_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/sqlite"
)

// The metrics are the processor's Observer (counters and histograms, updated as
// deliveries happen) and refresh their gauges from the store's statistics on their own
// schedule, so a scrape costs the database nothing.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	dir, err := os.MkdirTemp("", "outbox-metrics-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	deliver := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error { return nil })
	p, err := outbox.NewProcessor(store, deliver, outbox.Config{Observers: []outbox.Observer{m}, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// A service would now serve mux and keep the gauges current:
	//   go http.ListenAndServe("127.0.0.1:9464", mux)
	//   go m.Run(ctx, store, 15*time.Second)

	if err := store.Enqueue(ctx, time.Now(), outbox.NewEvent("order.created", "order-1", "user-1")); err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		log.Fatal(err)
	}
	if err := m.Refresh(ctx, store); err != nil {
		log.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		switch f.GetName() {
		case "outbox_events_delivered_total", "outbox_claimed_events_total":
			for _, metric := range f.GetMetric() {
				fmt.Println(f.GetName(), metric.GetCounter().GetValue())
			}
		case "outbox_events":
			for _, metric := range f.GetMetric() {
				if v := metric.GetGauge().GetValue(); v > 0 {
					fmt.Println(f.GetName(), metric.GetLabel()[0].GetValue(), v)
				}
			}
		}
	}
	// Output:
	// outbox_claimed_events_total 1
	// outbox_events completed 1
	// outbox_events_delivered_total 1
}
