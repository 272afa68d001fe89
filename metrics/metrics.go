// Package metrics exports what an outbox processor does as Prometheus metrics. A
// Metrics is an outbox.Observer (put it in Config.Observers) for the counters and
// histograms, and refreshes its gauges from Store.Stats (Refresh, then Run).
//
//	outbox_events_delivered_total{type}          deliveries that completed an event
//	outbox_events_failed_total{type}             failed attempts that will be retried
//	outbox_events_given_up_total{type}           failed attempts that gave the event up
//	outbox_events_released_total{type}           claims handed back without counting (shutdown, destination unavailable)
//	outbox_deliveries_unavailable_total{type}    attempts that failed as the destination's fault (not counted against the event)
//	outbox_outcomes_total{result}                the five counters above summed over types, by result: delivered,
//	                                             failed, given_up, released, unavailable; every result at 0 from the start
//	outbox_circuit_open                          1 while the circuit breaker holds deliveries back
//	outbox_destination_held{target,reason}       1 while deliveries to target ("" for the whole destination) are held for reason
//	outbox_circuit_opened_total                  times the circuit breaker opened
//	outbox_delivery_duration_seconds{type}       handler time per attempt (a batch's time, for batch sinks)
//	outbox_claim_duration_seconds                time of one claim query
//	outbox_claimed_events_total                  events claimed
//	outbox_events{status}                        events by status: pending, processing, failed (retrying), given_up, completed
//	outbox_events_stale                          events due for longer than the stale threshold
//	outbox_events_stuck                          events processing under an expired lease (their processor is gone)
//	outbox_oldest_due_age_seconds                how long the longest-due event has been due
//	outbox_oldest_pending_age_seconds            age of the oldest waiting event
//	outbox_stats_refresh_errors_total            failed Stats refreshes
//	outbox_stats_last_refresh_timestamp_seconds  when the gauges were last refreshed
//
// Prometheus alert rules for these metrics, one for each health rule of package outbox, are
// in rules/outbox.rules.yml beside this package, with their promtool tests.
package metrics

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fitiq/outbox"
)

// Config tunes a Metrics.
type Config struct {
	// Namespace prefixes every metric name. Defaults to "outbox".
	Namespace string
	// Buckets are the delivery and claim duration histogram buckets, in seconds.
	// Defaults to prometheus.DefBuckets (5ms … 10s).
	Buckets []float64
	// StaleAfter is the staleness threshold for the stale gauge. Defaults to
	// outbox.DefaultStaleAfter.
	StaleAfter time.Duration
	// UserID scopes the gauges to one user's events; empty counts all.
	UserID string
	// Clock supplies the time for ages. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives refresh failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Metrics records a processor's work. Its observer methods never block.
type Metrics struct {
	cfg Config

	delivered, failed, givenUp, released *prometheus.CounterVec
	// outcomes holds the per-type counters' totals, each result exported at 0 from the
	// start: a per-type counter has no series until its type is seen, so a rule reading
	// it finds nothing (a sum of nothing is empty, not 0) and an increase misses the
	// first increment. The alert rules (rules/outbox.rules.yml) read these.
	outcomes                      *prometheus.CounterVec
	deliveryDuration              *prometheus.HistogramVec
	claimDuration                 prometheus.Histogram
	claimed                       prometheus.Counter
	events                        *prometheus.GaugeVec
	stale, oldestAge, lastRefresh prometheus.Gauge
	refreshErrors                 prometheus.Counter

	unavailable         *prometheus.CounterVec
	circuitOpen         prometheus.Gauge
	held                *prometheus.GaugeVec
	circuitOpened       prometheus.Counter
	stuck, oldestDueAge prometheus.Gauge
}

var (
	_ outbox.Observer        = (*Metrics)(nil)
	_ outbox.BreakerObserver = (*Metrics)(nil)
)

// New creates the metrics and registers them with reg (prometheus.DefaultRegisterer
// when nil). It fails when a metric of the same name is already registered.
func New(reg prometheus.Registerer, cfg Config) (*Metrics, error) {
	if cfg.StaleAfter < 0 {
		return nil, &outbox.FieldError{Field: "metrics.Config.StaleAfter", Problem: "must not be negative"}
	}
	cfg.Namespace = cmp.Or(cfg.Namespace, "outbox")
	if len(cfg.Buckets) == 0 {
		cfg.Buckets = prometheus.DefBuckets
	}
	cfg.StaleAfter = cmp.Or(cfg.StaleAfter, outbox.DefaultStaleAfter)
	if cfg.Clock == nil {
		cfg.Clock = outbox.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	ns := cfg.Namespace
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, []string{"type"})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help})
	}
	m := &Metrics{
		cfg:       cfg,
		delivered: counter("events_delivered_total", "Deliveries that completed an event, by event type."),
		failed:    counter("events_failed_total", "Failed delivery attempts that will be retried, by event type."),
		givenUp:   counter("events_given_up_total", "Failed delivery attempts that gave the event up (permanent error or no attempts left), by event type."),
		released:  counter("events_released_total", "Claimed events handed back without counting the attempt (the processor was stopping, or the destination was unavailable), by event type."),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "outcomes_total",
			Help: "Delivery outcomes of all types, by result: delivered, failed (will be retried), given_up, released (handed back uncounted), unavailable (the destination's fault). Every result is exported from the start.",
		}, []string{"result"}),
		deliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "delivery_duration_seconds", Buckets: cfg.Buckets,
			Help: "Time the sink took per delivery attempt (for batch sinks, the whole batch's time), by event type.",
		}, []string{"type"}),
		claimDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "claim_duration_seconds", Buckets: cfg.Buckets,
			Help: "Time of one claim of due events from the store.",
		}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "claimed_events_total", Help: "Events claimed for delivery."}),
		events: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "events",
			Help: "Events in the store by status (pending, processing, failed = retrying, given_up, completed), as of the last refresh.",
		}, []string{"status"}),
		stale:         gauge("events_stale", "Events due for longer than the stale threshold, as of the last refresh."),
		oldestAge:     gauge("oldest_pending_age_seconds", "How long the oldest pending or retrying event has waited, as of the last refresh."),
		lastRefresh:   gauge("stats_last_refresh_timestamp_seconds", "Unix time of the last successful refresh of the gauges."),
		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "stats_refresh_errors_total", Help: "Refreshes of the gauges that failed."}),
		unavailable:   counter("deliveries_unavailable_total", "Delivery attempts that failed as the destination's fault (unreachable, credentials rejected, target missing; not counted against the event), by event type."),
		circuitOpen:   gauge("circuit_open", "1 while the circuit breaker holds every delivery back because the destination is at fault, else 0."),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "destination_held",
			Help: "1 while deliveries to a target (empty: the whole destination) are held, not attempted, because of a fault of the destination named by reason (unreachable, credentials rejected, target missing).",
		}, []string{"target", "reason"}),
		circuitOpened: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "circuit_opened_total", Help: "Times the circuit breaker opened."}),
		stuck:         gauge("events_stuck", "Events processing under an expired lease (their processor is gone), as of the last refresh."),
		oldestDueAge:  gauge("oldest_due_age_seconds", "How long the event due the longest has been due, as of the last refresh."),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.failed, m.givenUp, m.released, m.outcomes, m.deliveryDuration,
		m.claimDuration, m.claimed, m.events, m.stale, m.oldestAge, m.lastRefresh, m.refreshErrors,
		m.unavailable, m.circuitOpen, m.held, m.circuitOpened, m.stuck, m.oldestDueAge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range outcomeResults {
		m.outcomes.WithLabelValues(r)
	}
	return m, nil
}

// The results of outbox_outcomes_total.
const (
	resultDelivered   = "delivered"
	resultFailed      = "failed"
	resultGivenUp     = "given_up"
	resultReleased    = "released"
	resultUnavailable = "unavailable"
)

var outcomeResults = []string{resultDelivered, resultFailed, resultGivenUp, resultReleased, resultUnavailable}

// ObserveClaim implements outbox.Observer.
func (m *Metrics) ObserveClaim(n int, d time.Duration) {
	m.claimDuration.Observe(d.Seconds())
	m.claimed.Add(float64(n))
}

// ObserveDelivery implements outbox.Observer.
func (m *Metrics) ObserveDelivery(e outbox.Event, o outbox.Outcome, d time.Duration) {
	switch {
	case o.Result == outbox.Delivered:
		m.delivered.WithLabelValues(e.Type).Inc()
		m.outcomes.WithLabelValues(resultDelivered).Inc()
	case o.Result == outbox.Failed && o.NextAttemptAt.IsZero():
		m.givenUp.WithLabelValues(e.Type).Inc()
		m.outcomes.WithLabelValues(resultGivenUp).Inc()
	case o.Result == outbox.Failed:
		m.failed.WithLabelValues(e.Type).Inc()
		m.outcomes.WithLabelValues(resultFailed).Inc()
	case o.Result == outbox.Released:
		m.released.WithLabelValues(e.Type).Inc()
		m.outcomes.WithLabelValues(resultReleased).Inc()
		return // never attempted: no duration
	}
	m.deliveryDuration.WithLabelValues(e.Type).Observe(d.Seconds())
}

// ObserveUnavailable implements outbox.BreakerObserver.
func (m *Metrics) ObserveUnavailable(e outbox.Event, _ error) {
	m.unavailable.WithLabelValues(e.Type).Inc()
	m.outcomes.WithLabelValues(resultUnavailable).Inc()
}

// ObserveHold implements outbox.BreakerObserver.
func (m *Metrics) ObserveHold(target, reason string, held bool) {
	m.held.DeletePartialMatch(prometheus.Labels{"target": target})
	if held {
		m.held.WithLabelValues(target, reason).Set(1)
	}
	if target != "" {
		return
	}
	if held {
		m.circuitOpen.Set(1)
		m.circuitOpened.Inc()
		return
	}
	m.circuitOpen.Set(0)
}

// Refresh sets the gauges from store's statistics.
func (m *Metrics) Refresh(ctx context.Context, store outbox.Store) error {
	now := m.cfg.Clock.Now()
	s, err := store.Stats(ctx, outbox.StatsQuery{UserID: m.cfg.UserID, Now: now, StaleAfter: m.cfg.StaleAfter})
	if err != nil {
		m.refreshErrors.Inc()
		return err
	}
	m.events.WithLabelValues("pending").Set(float64(s.Pending))
	m.events.WithLabelValues("processing").Set(float64(s.Processing))
	m.events.WithLabelValues("failed").Set(float64(s.Failed))
	m.events.WithLabelValues("given_up").Set(float64(s.GivenUp))
	m.events.WithLabelValues("completed").Set(float64(s.Completed))
	m.stale.Set(float64(s.Stale))
	m.stuck.Set(float64(s.Stuck))
	m.oldestDueAge.Set(s.OldestDueAge.Seconds())
	m.oldestAge.Set(s.OldestPendingAge.Seconds())
	m.lastRefresh.Set(float64(now.UnixNano()) / 1e9)
	return nil
}

// Run refreshes the gauges every interval until ctx ends (call Refresh first for
// values from the start). Stats queries are indexed counts, but a scrape should not
// cost the database a query each, so the gauges are refreshed on their own schedule
// rather than on scrape.
func (m *Metrics) Run(ctx context.Context, store outbox.Store, interval time.Duration) {
	refreshEvery(ctx, interval, m.cfg.Logger, "refreshing outbox gauges failed", func(ctx context.Context) error {
		return m.Refresh(ctx, store)
	})
}

// refreshEvery calls refresh every interval until ctx ends, logging its failures as
// failed.
func refreshEvery(ctx context.Context, interval time.Duration, log *slog.Logger, failed string, refresh func(context.Context) error) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := refresh(ctx); err != nil && ctx.Err() == nil {
			log.Warn(failed, "err", err)
		}
	}
}
