package postgres_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// The relays are metrics.LogSources.
var _ metrics.LogSource = (*postgres.LogRelay)(nil)

// TestLogRelayReportsToMetrics: a relay given the metrics package's observer counts
// what it reads, delivers and fails, and the hold of the whole destination while it
// refuses credentials, as a Processor's metrics do.
func TestLogRelayReportsToMetrics(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var refusing atomic.Bool
	rec := &logReceiver{fail: func(e outbox.Event, attempt int) error {
		switch {
		case refusing.Load():
			return &outbox.DestinationError{Reason: outbox.ReasonCredentials, Err: errors.New("401 unauthorized")}
		case e.EntityID == "b/1":
			return outbox.Permanent(errors.New("422 unprocessable"))
		}
		return nil
	}}
	r := env.relay(t, rec, postgres.LogRelayConfig{MaxConcurrent: 1, Observers: []outbox.Observer{m}})

	appendKeyed(t, env.log, env.pool, "a/1", "b/1", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Failed != 1 {
		t.Fatalf("first step: %+v, %v", st, err)
	}
	refusing.Store(true)
	appendKeyed(t, env.log, env.pool, "d/1")
	if st, err := r.Step(ctx); err != nil || !st.Held {
		t.Fatalf("second step: %+v, %v", st, err)
	}
	outboxtest.CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 1
# HELP outbox_claimed_events_total Events claimed for delivery.
# TYPE outbox_claimed_events_total counter
outbox_claimed_events_total 4
# HELP outbox_destination_held 1 while deliveries to a target (empty: the whole destination) are held, not attempted, because of a fault of the destination named by reason (unreachable, credentials rejected, target missing).
# TYPE outbox_destination_held gauge
outbox_destination_held{reason="credentials rejected",target=""} 1
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 2
# HELP outbox_events_given_up_total Failed delivery attempts that gave the event up (permanent error or no attempts left), by event type.
# TYPE outbox_events_given_up_total counter
outbox_events_given_up_total{type="order.created"} 1
# HELP outbox_events_released_total Claimed events handed back without counting the attempt (the processor was stopping, or the destination was unavailable), by event type.
# TYPE outbox_events_released_total counter
outbox_events_released_total{type="order.created"} 1
`)

	refusing.Store(false)
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Held {
		t.Fatalf("step after recovery: %+v, %v", st, err)
	}
	outboxtest.CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 0
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 3
`)
	if n, err := testutil.GatherAndCount(reg, "outbox_destination_held"); err != nil || n != 0 {
		t.Fatalf("%d outbox_destination_held series after the destination answered (%v), want none", n, err)
	}
}
