package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
)

// relayRun is what the relay's modes share once its processor is made.
type relayRun struct {
	env    *Env
	log    *slog.Logger
	store  outbox.Store // the store itself (readiness)
	gauges outbox.Store // the store under the processor's deadlines (metrics)
	p      *outbox.Processor
	m      *metrics.Metrics
	wg     *sync.WaitGroup
	runCtx context.Context // ends when the relay has stopped
	// On the log layout (relay --layout=log; nil otherwise): the log relay's holds,
	// for /readyz, and the gauges of what waits on the log, with their source.
	logHold    *logHold
	logMetrics *metrics.LogMetrics
	logWaiting metrics.LogSource
}

// serveMetrics serves /metrics, /healthz and /readyz at addr, and refreshes the gauges
// every interval, until the returned stop is called.
func (r *relayRun) serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, interval time.Duration) (stop func(), err error) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: the process answers. Restarting it would not mend a database or
		// a destination that is down, so nothing else is asked here.
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		err := ready(ctx, r.store, r.p)
		if err == nil && r.logHold != nil {
			err = r.logHold.err()
		}
		if err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics server failed", "err", err)
		}
	})
	if err := r.m.Refresh(ctx, r.gauges); err != nil {
		r.log.Warn("refreshing outbox gauges failed", "err", err)
	}
	r.wg.Go(func() { r.m.Run(r.runCtx, r.gauges, interval) })
	if r.logMetrics != nil {
		if err := r.logMetrics.Refresh(ctx, r.logWaiting); err != nil {
			r.log.Warn("refreshing the log's gauges failed", "err", err)
		}
		r.wg.Go(func() { r.logMetrics.Run(r.runCtx, r.logWaiting, interval) })
	}
	r.log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	if r.env.onListen != nil {
		r.env.onListen(ln.Addr().String())
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// once delivers what is due now, prints what happened and what is held, and fails when
// any attempt of the run failed or was held, so that a cron job notices.
func (r *relayRun) once(ctx context.Context, tally *outcomeTally) error {
	n, err := r.p.Drain(ctx)
	_ = r.m.Refresh(context.WithoutCancel(ctx), r.gauges)
	if err != nil {
		return fmt.Errorf("after claiming %d events: %w", n, err)
	}
	st, err := r.p.Stats(ctx)
	if err != nil {
		return err
	}
	delivered, failed, unavailable := tally.counts()
	fmt.Fprintf(r.env.Stdout, "claimed %d events: %d delivered, %d failed, %d held by a fault of the sink; now %d pending, %d retrying, %d given up, %d completed\n",
		n, delivered, failed, unavailable, st.Pending, st.Failed, st.GivenUp, st.Completed)
	for _, h := range holds(r.p.Breaker()) {
		fmt.Fprintln(r.env.Stdout, h)
	}
	if failed+unavailable > 0 {
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("%d of %d delivery attempts failed", failed+unavailable, delivered+failed+unavailable)}
	}
	return nil
}

// onceLog delivers the log (LogRelay.Drain), says what it did, then delivers what is
// due in the events table (once). It fails when any attempt of either failed or was
// held.
func (r *relayRun) onceLog(ctx context.Context, tally *outcomeTally, lr *logRelay) error {
	st, err := lr.drain(ctx)
	if err != nil {
		return fmt.Errorf("after reading %d events of the log: %w", st.read, err)
	}
	if lr.trim != nil {
		if err := lr.trim(ctx); err != nil {
			r.log.Warn("letting go of the delivered part of the log failed; the next run tries again", "err", err)
		}
	}
	fmt.Fprintf(r.env.Stdout, "read %d events from the log: %d delivered, %d failed (moved to the events table), %d moved behind an earlier event of their key\n",
		st.read, st.delivered, st.failed, st.waiting)
	if st.duplicates > 0 {
		fmt.Fprintf(r.env.Stdout, "%d events of the log not moved: the events table holds their IDs already\n", st.duplicates)
	}
	if st.held {
		fmt.Fprintf(r.env.Stdout, "log delivery held: %v; its batch waits in the log, attempts not spent\n", st.fault)
	}
	if st.busy {
		// On PostgreSQL, Drain waits for the shards other relays hold: only a pass that a
		// fault of the sink held ends with some still held.
		fmt.Fprintln(r.env.Stdout, "another relay holds the log's cursor and delivers what it holds")
	}
	perr := r.once(ctx, tally)
	if st.failed == 0 && !st.held {
		return perr
	}
	var ee *exitError
	if perr != nil && !errors.As(perr, &ee) {
		return perr
	}
	msg := fmt.Sprintf("%d of %d deliveries from the log failed", st.failed, st.delivered+st.failed)
	if st.held {
		msg = "delivery from the log held by a fault of the sink"
		if st.failed > 0 {
			msg = fmt.Sprintf("%d of %d deliveries from the log failed, then the sink's fault held the log", st.failed, st.delivered+st.failed)
		}
	}
	if ee != nil {
		msg = ee.msg + "; " + msg
	}
	return &exitError{code: ExitFailure, msg: msg}
}
