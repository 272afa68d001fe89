package oteloutbox

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fitiq/outbox"
)

// DefaultStaleAfter is the staleness threshold of the stale gauge unless configured.
const DefaultStaleAfter = outbox.DefaultStaleAfter

// Attribute keys of the metrics.
const (
	// EventTypeKey is the event type a delivery counter or duration is for.
	EventTypeKey = attribute.Key("outbox.event.type")
	// EventStatusKey is the status an outbox.events.stored gauge counts.
	EventStatusKey = attribute.Key("outbox.event.status")
)

// MetricsConfig tunes a Metrics.
type MetricsConfig struct {
	// MeterProvider makes the instruments. Defaults to otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// StaleAfter is the staleness threshold for the stale gauge. Defaults to
	// DefaultStaleAfter.
	StaleAfter time.Duration
	// UserID scopes the gauges to one user's events; empty counts all.
	UserID string
	// Clock supplies the time for ages. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives refresh failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports a field of c that cannot work, naming it.
func (c MetricsConfig) Validate() error {
	if c.StaleAfter < 0 {
		return &outbox.FieldError{Field: "oteloutbox.MetricsConfig.StaleAfter", Problem: "must not be negative"}
	}
	return nil
}

// Metrics is an outbox.Observer recording what a processor does with the
// OpenTelemetry metrics API: the instruments of package metrics, named after the
// OpenTelemetry conventions (dotted, units apart, no _total suffix).
//
//	outbox.events.delivered{outbox.event.type}      deliveries that completed an event
//	outbox.events.failed{outbox.event.type}         failed attempts that will be retried
//	outbox.events.given_up{outbox.event.type}       failed attempts that gave the event up
//	outbox.events.released{outbox.event.type}       claims handed back unattempted (shutdown)
//	outbox.delivery.duration{outbox.event.type}     handler time per attempt, s
//	outbox.claim.duration                           time of one claim query, s
//	outbox.events.claimed                           events claimed
//	outbox.events.stored{outbox.event.status}       events by status: pending, processing, failed, given_up, completed
//	outbox.events.stale                             events due for longer than the stale threshold
//	outbox.oldest_pending.age                       age of the oldest waiting event, s
//	outbox.stats.refresh.errors                     failed Stats refreshes
//	outbox.stats.last_refresh                       when the gauges were last refreshed, Unix s
//
// The gauges are refreshed from Store.Stats by Refresh and Run, on their own schedule.
type Metrics struct {
	cfg MetricsConfig

	delivered, failed, givenUp, released, claimed, refreshErrors metric.Int64Counter
	deliveryDuration, claimDuration                              metric.Float64Histogram
	stored, stale                                                metric.Int64Gauge
	oldestAge, lastRefresh                                       metric.Float64Gauge
}

var _ outbox.Observer = (*Metrics)(nil)

// NewMetrics creates the instruments, or fails naming the field of cfg that cannot
// work or the instrument that could not be made.
func NewMetrics(cfg MetricsConfig) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	cfg.StaleAfter = cmp.Or(cfg.StaleAfter, DefaultStaleAfter)
	if cfg.Clock == nil {
		cfg.Clock = outbox.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	meter := mp.Meter(ScopeName)
	m := &Metrics{cfg: cfg}
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{event}"))
		errs = append(errs, err)
		return c
	}
	seconds := func(name, desc string) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"))
		errs = append(errs, err)
		return h
	}
	m.delivered = counter("outbox.events.delivered", "Deliveries that completed an event, by event type.")
	m.failed = counter("outbox.events.failed", "Failed delivery attempts that will be retried, by event type.")
	m.givenUp = counter("outbox.events.given_up", "Failed delivery attempts that gave the event up (permanent error or no attempts left), by event type.")
	m.released = counter("outbox.events.released", "Claimed events handed back unattempted because the processor was stopping, by event type.")
	m.claimed = counter("outbox.events.claimed", "Events claimed for delivery.")
	m.deliveryDuration = seconds("outbox.delivery.duration", "Time the sink took per delivery attempt (for batch sinks, the whole batch's time), by event type.")
	m.claimDuration = seconds("outbox.claim.duration", "Time of one claim of due events from the store.")
	var err error
	m.refreshErrors, err = meter.Int64Counter("outbox.stats.refresh.errors", metric.WithDescription("Refreshes of the gauges that failed."), metric.WithUnit("{refresh}"))
	errs = append(errs, err)
	m.stored, err = meter.Int64Gauge("outbox.events.stored", metric.WithDescription("Events in the store by status (pending, processing, failed = retrying, given_up, completed), as of the last refresh."), metric.WithUnit("{event}"))
	errs = append(errs, err)
	m.stale, err = meter.Int64Gauge("outbox.events.stale", metric.WithDescription("Events due for longer than the stale threshold, as of the last refresh."), metric.WithUnit("{event}"))
	errs = append(errs, err)
	m.oldestAge, err = meter.Float64Gauge("outbox.oldest_pending.age", metric.WithDescription("How long the oldest pending or retrying event has waited, as of the last refresh."), metric.WithUnit("s"))
	errs = append(errs, err)
	m.lastRefresh, err = meter.Float64Gauge("outbox.stats.last_refresh", metric.WithDescription("Unix time of the last successful refresh of the gauges."), metric.WithUnit("s"))
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveClaim implements outbox.Observer.
func (m *Metrics) ObserveClaim(n int, d time.Duration) {
	ctx := context.Background()
	m.claimDuration.Record(ctx, d.Seconds())
	m.claimed.Add(ctx, int64(n))
}

// ObserveDelivery implements outbox.Observer.
func (m *Metrics) ObserveDelivery(e outbox.Event, o outbox.Outcome, d time.Duration) {
	ctx := context.Background()
	typ := metric.WithAttributes(EventTypeKey.String(e.Type))
	switch {
	case o.Result == outbox.Delivered:
		m.delivered.Add(ctx, 1, typ)
	case o.Result == outbox.Failed && o.NextAttemptAt.IsZero():
		m.givenUp.Add(ctx, 1, typ)
	case o.Result == outbox.Failed:
		m.failed.Add(ctx, 1, typ)
	case o.Result == outbox.Released:
		m.released.Add(ctx, 1, typ)
		return // never attempted: no duration
	}
	m.deliveryDuration.Record(ctx, d.Seconds(), typ)
}

// Refresh sets the gauges from store's statistics.
func (m *Metrics) Refresh(ctx context.Context, store outbox.Store) error {
	now := m.cfg.Clock.Now()
	s, err := store.Stats(ctx, outbox.StatsQuery{UserID: m.cfg.UserID, Now: now, StaleAfter: m.cfg.StaleAfter})
	if err != nil {
		m.refreshErrors.Add(ctx, 1)
		return err
	}
	for _, st := range []struct {
		status string
		n      int
	}{{"pending", s.Pending}, {"processing", s.Processing}, {"failed", s.Failed}, {"given_up", s.GivenUp}, {"completed", s.Completed}} {
		m.stored.Record(ctx, int64(st.n), metric.WithAttributes(EventStatusKey.String(st.status)))
	}
	m.stale.Record(ctx, int64(s.Stale))
	m.oldestAge.Record(ctx, s.OldestPendingAge.Seconds())
	m.lastRefresh.Record(ctx, float64(now.UnixNano())/1e9)
	return nil
}

// Run refreshes the gauges every interval until ctx ends (call Refresh first for
// values from the start).
func (m *Metrics) Run(ctx context.Context, store outbox.Store, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := m.Refresh(ctx, store); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("refreshing outbox gauges failed", "err", err)
		}
	}
}
