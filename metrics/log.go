package metrics

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fitiq/outbox"
)

// LogSource tells what waits on an event log (the log layout, docs/log-layout.md) for
// one relay: the committed events its cursor has not passed, and when the oldest of
// them was created (zero when none wait). postgres.LogRelay and sqlite.LogRelay are
// LogSources.
type LogSource interface {
	Waiting(ctx context.Context) (events int64, oldest time.Time, err error)
}

// LogConfig tunes a LogMetrics.
type LogConfig struct {
	// Namespace prefixes every metric name. Defaults to "outbox".
	Namespace string
	// Clock gives the time the oldest event's age is taken at. Defaults to
	// outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives Run's failed refreshes. Defaults to slog.Default().
	Logger *slog.Logger
}

// LogMetrics are the gauges of what waits on an event log, beside the events table's
// (Metrics), which do not see the log:
//
//	outbox_log_events_waiting                  committed events past the relay's cursor
//	outbox_log_oldest_waiting_age_seconds      how long the oldest of them has existed (0: none)
//	outbox_log_last_refresh_timestamp_seconds  Unix time of the last successful refresh
//	outbox_log_refresh_errors_total            refreshes that failed
//
// A relay's Observers (LogRelayConfig.Observers) count its deliveries in Metrics'
// counters; these gauges tell what is still to deliver.
type LogMetrics struct {
	cfg           LogConfig
	waiting       prometheus.Gauge
	oldestAge     prometheus.Gauge
	lastRefresh   prometheus.Gauge
	refreshErrors prometheus.Counter
}

// NewLog creates the log's gauges and registers them with reg
// (prometheus.DefaultRegisterer when nil). It fails when a metric of the same name is
// already registered.
func NewLog(reg prometheus.Registerer, cfg LogConfig) (*LogMetrics, error) {
	ns := cmp.Or(cfg.Namespace, "outbox")
	if cfg.Clock == nil {
		cfg.Clock = outbox.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "log", Name: name, Help: help})
	}
	m := &LogMetrics{
		cfg:         cfg,
		waiting:     gauge("events_waiting", "Committed events on the event log that the relay's cursor has not passed, as of the last refresh."),
		oldestAge:   gauge("oldest_waiting_age_seconds", "How long the oldest event waiting on the log has existed (0 when none waits), as of the last refresh."),
		lastRefresh: gauge("last_refresh_timestamp_seconds", "Unix time of the last successful refresh of the log's gauges."),
		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "log", Name: "refresh_errors_total", Help: "Refreshes of the log's gauges that failed.",
		}),
	}
	for _, c := range []prometheus.Collector{m.waiting, m.oldestAge, m.lastRefresh, m.refreshErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Refresh sets the gauges from src.
func (m *LogMetrics) Refresh(ctx context.Context, src LogSource) error {
	n, oldest, err := src.Waiting(ctx)
	if err != nil {
		m.refreshErrors.Inc()
		return err
	}
	now := m.cfg.Clock.Now()
	age := time.Duration(0)
	if !oldest.IsZero() {
		age = max(now.Sub(oldest), 0)
	}
	m.waiting.Set(float64(n))
	m.oldestAge.Set(age.Seconds())
	m.lastRefresh.Set(float64(now.UnixNano()) / 1e9)
	return nil
}

// Run refreshes the gauges every interval until ctx ends (call Refresh first for
// values from the start). Counting what waits reads every waiting event's key, so the
// gauges are refreshed on their own schedule rather than on scrape.
func (m *LogMetrics) Run(ctx context.Context, src LogSource, interval time.Duration) {
	refreshEvery(ctx, interval, m.cfg.Logger, "refreshing the log's gauges failed", func(ctx context.Context) error {
		return m.Refresh(ctx, src)
	})
}
