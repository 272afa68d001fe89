package metrics

import (
	"cmp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fitiq/outbox/inbox"
)

// InboxConfig tunes an InboxMetrics.
type InboxConfig struct {
	// Namespace prefixes every metric name. Defaults to "outbox".
	Namespace string
	// Buckets are the processing-time histogram buckets, in seconds. Defaults to
	// prometheus.DefBuckets (5ms … 10s).
	Buckets []float64
}

// InboxMetrics records what an inbox does; set it as inbox.Config.Observer.
//
//	outbox_inbox_messages_total{result}          messages by result: applied, duplicate, expired, failed
//	outbox_inbox_process_duration_seconds{result} time per message, effect and commit included
//	outbox_inbox_cleaned_total                   processed IDs deleted past the retention window
//
// Its methods never block.
type InboxMetrics struct {
	messages *prometheus.CounterVec
	duration *prometheus.HistogramVec
	cleaned  prometheus.Counter
}

var _ inbox.Observer = (*InboxMetrics)(nil)

// NewInbox creates the inbox metrics and registers them with reg
// (prometheus.DefaultRegisterer when nil). It fails when a metric of the same name is
// already registered.
func NewInbox(reg prometheus.Registerer, cfg InboxConfig) (*InboxMetrics, error) {
	ns := cmp.Or(cfg.Namespace, "outbox")
	if len(cfg.Buckets) == 0 {
		cfg.Buckets = prometheus.DefBuckets
	}
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := &InboxMetrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "inbox", Name: "messages_total",
			Help: "Messages the inbox processed, by result: applied, duplicate (redelivery, no effect), expired (older than the window, refused), failed (rolled back).",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "inbox", Name: "process_duration_seconds", Buckets: cfg.Buckets,
			Help: "Time to process one message, effect and commit included, by result.",
		}, []string{"result"}),
		cleaned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "inbox", Name: "cleaned_total",
			Help: "Processed message IDs deleted once past the retention window.",
		}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.duration, m.cleaned} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every result from the start, so that a rate over a fresh process is not missing.
	for _, r := range []inbox.Result{inbox.Applied, inbox.Duplicate, inbox.Expired, inbox.Failed} {
		m.messages.WithLabelValues(r.String())
	}
	return m, nil
}

// ObserveMessage implements inbox.Observer.
func (m *InboxMetrics) ObserveMessage(r inbox.Result, d time.Duration) {
	m.messages.WithLabelValues(r.String()).Inc()
	m.duration.WithLabelValues(r.String()).Observe(d.Seconds())
}

// ObserveCleanup implements inbox.Observer.
func (m *InboxMetrics) ObserveCleanup(n int, d time.Duration) { m.cleaned.Add(float64(n)) }
