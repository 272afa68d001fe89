package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
)

// waitingSource is a metrics.LogSource that answers as told.
type waitingSource struct {
	events int64
	oldest time.Time
	err    error
}

func (s waitingSource) Waiting(context.Context) (int64, time.Time, error) {
	return s.events, s.oldest, s.err
}

// TestLogMetricsRefresh: the gauges say how many events wait on the log and how long
// the oldest has existed (0 when none waits); a failed refresh counts and leaves them.
func TestLogMetricsRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	clock := outboxtest.NewClock(outboxtest.T0)
	m, err := metrics.NewLog(reg, metrics.LogConfig{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	const help = `
# HELP outbox_log_events_waiting Committed events on the event log that the relay's cursor has not passed, as of the last refresh.
# TYPE outbox_log_events_waiting gauge
# HELP outbox_log_oldest_waiting_age_seconds How long the oldest event waiting on the log has existed (0 when none waits), as of the last refresh.
# TYPE outbox_log_oldest_waiting_age_seconds gauge
# HELP outbox_log_refresh_errors_total Refreshes of the log's gauges that failed.
# TYPE outbox_log_refresh_errors_total counter
`
	if err := m.Refresh(ctx, waitingSource{events: 1200, oldest: outboxtest.T0.Add(-90 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	outboxtest.CheckMetrics(t, reg, help+`
outbox_log_events_waiting 1200
outbox_log_oldest_waiting_age_seconds 90
outbox_log_refresh_errors_total 0
`)
	if err := m.Refresh(ctx, waitingSource{err: errors.New("connection refused")}); err == nil {
		t.Fatal("a failed refresh returned no error")
	}
	outboxtest.CheckMetrics(t, reg, help+`
outbox_log_events_waiting 1200
outbox_log_oldest_waiting_age_seconds 90
outbox_log_refresh_errors_total 1
`)
	clock.Advance(time.Minute)
	if err := m.Refresh(ctx, waitingSource{}); err != nil {
		t.Fatal(err)
	}
	outboxtest.CheckMetrics(t, reg, help+`
outbox_log_events_waiting 0
outbox_log_oldest_waiting_age_seconds 0
outbox_log_refresh_errors_total 1
`)
}
