package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sink/natssink"
)

type relayOpts struct {
	sink string

	// processor
	user           string
	batchSize      int
	pollInterval   time.Duration
	maxConcurrent  int
	maxAttempts    int
	retryDelays    string
	lease          time.Duration
	handlerTimeout time.Duration
	cleanup        time.Duration
	retention      time.Duration
	staleAfter     time.Duration
	skipGivenUp    bool
	owner          string
	drainTimeout   time.Duration
	once           bool

	// sinks
	sinkTimeout time.Duration
	subject     string
	stream      string
	exchange    string
	headers     listFlag
	bearerToken string
	insecure    bool

	// operations
	metricsAddr     string
	metricsInterval time.Duration
	logLevel        string
}

var relayCmd = &command{
	name: "relay", args: "--sink URL [flags]", needsDSN: true,
	summary: "Deliver events to a sink until stopped (SIGINT/SIGTERM drain in-flight work).",
	help: `
Sinks, chosen by the URL's scheme:
  http://… https://…   POST the JSON envelope per event; Idempotency-Key = event ID
  nats://…             JetStream publish to --subject; Nats-Msg-Id = event ID
  amqp://… amqps://…   RabbitMQ publish to --exchange with routing key --subject;
                       persistent, mandatory, publisher-confirmed; message-id = event ID

On SIGINT or SIGTERM the relay stops claiming, lets deliveries in flight finish (up to
--drain-timeout), records their outcomes, hands back what it had claimed but not
started, and exits 0. A second signal is not needed and not special.

Examples:
  outbox relay --dsn sqlite:./app.db --sink https://api.example.com/outbox/events
  outbox relay --sink nats://127.0.0.1:4222 --subject 'app.{user_id}.{type}' --metrics-addr :9464
  OUTBOX_SINK_TOKEN=… outbox relay --sink https://api.example.com/sync --header 'X-Tenant: acme'
  outbox relay --sink amqp://guest:guest@127.0.0.1:5672/ --exchange amq.topic --batch-size 100
  outbox relay --sink http://127.0.0.1:8080/events --once     # deliver what is due, then exit`,
	flags: func(fs *flag.FlagSet) any {
		o := &relayOpts{}
		fs.StringVar(&o.sink, "sink", "", "where to deliver: http(s)://…, nats://…, amqp(s)://… (required)")
		fs.StringVar(&o.user, "user", "", "deliver only this user's events (default: all users)")
		fs.IntVar(&o.batchSize, "batch-size", outbox.DefaultBatchSize, "events claimed per cycle")
		durationVar(fs, &o.pollInterval, "poll-interval", outbox.DefaultPollInterval, "idle wait between cycles (wake-ups cut it short)")
		fs.IntVar(&o.maxConcurrent, "max-concurrent", outbox.DefaultMaxConcurrent, "deliveries at once (HTTP; broker sinks send a batch at once)")
		fs.IntVar(&o.maxAttempts, "max-attempts", outbox.DefaultMaxAttempts, "attempts before an event is given up")
		fs.StringVar(&o.retryDelays, "retry-delays", formatDurations(outbox.DefaultRetryDelays), "delay after the 1st, 2nd, … failed attempt; the last repeats")
		durationVar(fs, &o.lease, "lease", outbox.DefaultLeaseDuration, "how long a claim holds an event if this relay dies")
		durationVar(fs, &o.handlerTimeout, "handler-timeout", outbox.DefaultHandlerTimeout, "bound on one delivery (one batch, for broker sinks)")
		durationVar(fs, &o.cleanup, "cleanup-interval", outbox.DefaultCleanupInterval, "how often completed events past --retention are deleted (negative: never)")
		durationVar(fs, &o.retention, "retention", outbox.DefaultRetention, "how long completed events are kept")
		durationVar(fs, &o.staleAfter, "stale-after", outbox.DefaultStaleAfter, "an event due for longer than this is stale (metrics)")
		fs.BoolVar(&o.skipGivenUp, "skip-given-up", false, "let events pass a given-up earlier event of their ordering key")
		fs.StringVar(&o.owner, "owner", "", "this relay's name in leases (default host-pid-random)")
		durationVar(fs, &o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long in-flight deliveries may finish")
		fs.BoolVar(&o.once, "once", false, "deliver what is due now, then exit (no daemon)")
		durationVar(fs, &o.sinkTimeout, "sink-timeout", httpsink.DefaultTimeout, "HTTP request timeout / broker acknowledgement timeout")
		fs.StringVar(&o.subject, "subject", natssink.DefaultSubject, "NATS subject or AMQP routing key template: {type}, {entity_id}, {user_id}")
		fs.StringVar(&o.stream, "stream", "", "NATS: the stream messages must land in (default: any that captures the subject)")
		fs.StringVar(&o.exchange, "exchange", amqpsink.DefaultExchange, "AMQP exchange")
		fs.Var(&o.headers, "header", "HTTP: extra request header 'Name: value' (repeatable)")
		fs.StringVar(&o.bearerToken, "bearer-token", "", "HTTP: Authorization bearer token (default $OUTBOX_SINK_TOKEN; prefer the variable)")
		fs.BoolVar(&o.insecure, "insecure-skip-verify", false, "HTTP: do not verify the server's TLS certificate (test servers only)")
		fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics; a bare :PORT binds 127.0.0.1")
		durationVar(fs, &o.metricsInterval, "metrics-interval", 15*time.Second, "how often the pending/processing gauges are refreshed")
		fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
		return o
	},
	run: runRelay,
}

// relayConfig is the relay's validated plan: everything checked before anything is
// opened, so that bad input exits 2 having touched nothing.
type relayConfig struct {
	proc        outbox.Config
	newSink     func(log *slog.Logger) (outbox.Handler, func(), error)
	metricsAddr string
}

func (o *relayOpts) validate(env *Env) (*relayConfig, error) {
	if o.sink == "" {
		return nil, usagef("--sink is required (http(s)://…, nats://… or amqp://…)")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"--batch-size", o.batchSize}, {"--max-concurrent", o.maxConcurrent}, {"--max-attempts", o.maxAttempts}} {
		if f.v <= 0 {
			return nil, usagef("%s must be positive, got %d", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"--poll-interval", o.pollInterval}, {"--lease", o.lease}, {"--handler-timeout", o.handlerTimeout},
		{"--retention", o.retention}, {"--stale-after", o.staleAfter}, {"--drain-timeout", o.drainTimeout},
		{"--sink-timeout", o.sinkTimeout}, {"--metrics-interval", o.metricsInterval},
	} {
		if f.v <= 0 {
			return nil, usagef("%s must be positive, got %s", f.name, f.v)
		}
	}
	if o.cleanup == 0 {
		return nil, usagef("--cleanup-interval 0: give a negative value (-1s) to turn cleanup off")
	}
	var delays []time.Duration
	for part := range strings.SplitSeq(o.retryDelays, ",") {
		d, err := parseDuration(strings.TrimSpace(part))
		if err != nil || d < 0 {
			return nil, usagef("--retry-delays %q: %q is not a non-negative duration", o.retryDelays, part)
		}
		delays = append(delays, d)
	}
	rc := &relayConfig{proc: outbox.Config{
		UserID: o.user, BatchSize: o.batchSize, PollInterval: o.pollInterval, MaxConcurrent: o.maxConcurrent,
		Retry:         outbox.RetryPolicy{Delays: delays, MaxAttempts: o.maxAttempts},
		LeaseDuration: o.lease, HandlerTimeout: o.handlerTimeout, CleanupInterval: o.cleanup,
		Retention: o.retention, StaleAfter: o.staleAfter, SkipGivenUp: o.skipGivenUp, Owner: o.owner,
		Clock: env.Clock,
	}}
	if err := rc.proc.Validate(); err != nil {
		return nil, usagef("%s", relayFlagNames(err))
	}
	if o.metricsAddr != "" {
		addr, err := metricsAddr(o.metricsAddr)
		if err != nil {
			return nil, err
		}
		rc.metricsAddr = addr
	}
	sinkFn, err := o.sinkFactory(env)
	if err != nil {
		return nil, err
	}
	rc.newSink = sinkFn
	return rc, nil
}

// metricsAddr binds a bare port to the loopback interface: metrics are exposed beyond
// the host only when an address says so.
func metricsAddr(s string) (string, error) {
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", usagef("--metrics-addr %q: want HOST:PORT or :PORT", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", usagef("--metrics-addr %q: port %q is not a number from 0 to 65535", s, port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// sinkFactory checks the sink URL and options and returns how to build the sink.
func (o *relayOpts) sinkFactory(env *Env) (func(*slog.Logger) (outbox.Handler, func(), error), error) {
	u, err := url.Parse(o.sink)
	if err != nil || u.Scheme == "" {
		return nil, usagef("--sink %q is not a URL (want http(s)://…, nats://… or amqp://…)", o.sink)
	}
	switch u.Scheme {
	case "http", "https":
		header := map[string][]string{}
		for _, h := range o.headers {
			name, value, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(name) == "" {
				return nil, usagef("--header %q: want 'Name: value'", h)
			}
			name = strings.TrimSpace(name)
			header[name] = append(header[name], strings.TrimSpace(value))
		}
		cfg := httpsink.Config{
			URL: o.sink, Timeout: o.sinkTimeout, Header: header, InsecureSkipVerify: o.insecure,
			BearerToken: firstNonEmpty(o.bearerToken, env.Getenv("OUTBOX_SINK_TOKEN")),
		}
		s, err := httpsink.New(cfg)
		var fe *outbox.FieldError
		if errors.As(err, &fe) && fe.Field == "httpsink.Config.Header" {
			return nil, usagef("--header: %s", fe.Problem)
		}
		if err != nil {
			return nil, usagef("--sink: %v", err)
		}
		return func(*slog.Logger) (outbox.Handler, func(), error) { return s, func() {}, nil }, nil
	case "nats", "tls":
		cfg := natssink.Config{Subject: o.subject, Stream: o.stream, AckTimeout: o.sinkTimeout}
		if err := cfg.Validate(); err != nil {
			return nil, usagef("%v", err)
		}
		return func(log *slog.Logger) (outbox.Handler, func(), error) {
			nc, err := nats.Connect(o.sink,
				nats.Name("outbox relay"),
				nats.RetryOnFailedConnect(true), // start even while NATS is down; deliveries retry
				nats.MaxReconnects(-1),
				nats.ReconnectWait(time.Second),
				nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("disconnected from NATS", "err", err) }),
				nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted()) }),
			)
			if err != nil {
				return nil, nil, fmt.Errorf("connect to NATS: %w", err)
			}
			s, err := natssink.New(nc, cfg)
			if err != nil {
				nc.Close()
				return nil, nil, err
			}
			return s, func() { _ = nc.Drain() }, nil
		}, nil
	case "amqp", "amqps":
		cfg := amqpsink.Config{URL: o.sink, Exchange: o.exchange, RoutingKey: o.subject, ConfirmTimeout: o.sinkTimeout}
		if err := cfg.Validate(); err != nil {
			return nil, usagef("%v", err)
		}
		return func(log *slog.Logger) (outbox.Handler, func(), error) {
			cfg.Logger = log
			s, err := amqpsink.New(cfg)
			if err != nil {
				return nil, nil, err
			}
			return s, func() { _ = s.Close() }, nil
		}, nil
	default:
		return nil, usagef("unknown sink scheme %q in --sink (want http, https, nats or amqp)", u.Scheme)
	}
}

func runRelay(ctx context.Context, env *Env, c *call) error {
	o := c.opts.(*relayOpts)
	if err := noArgs(c); err != nil {
		return err
	}
	log, err := newLogger(env.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	rc, err := o.validate(env)
	if err != nil {
		return err
	}
	d, err := parseDSN(c.dsn)
	if err != nil {
		return err
	}
	opened, err := d.open(ctx, false, c.timeout)
	if err != nil {
		return err
	}
	defer opened.close()
	store := opened.Store // the store itself, so that the processor finds its Notifier
	handler, closeSink, err := rc.newSink(log)
	if err != nil {
		return err
	}
	defer closeSink()

	// The processor runs on a context of its own: a signal must drain it (Stop), not
	// cancel it, which would abort deliveries in flight.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var wg sync.WaitGroup
	defer wg.Wait()

	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{StaleAfter: o.staleAfter, UserID: o.user, Clock: env.Clock, Logger: log})
	if err != nil {
		return err
	}
	observers := observerList{m}
	if env.observer != nil {
		observers = append(observers, env.observer)
	}
	rc.proc.Observer = observers
	rc.proc.Logger = log
	p, err := outbox.NewProcessor(store, handler, rc.proc)
	if err != nil {
		return usagef("%v", err)
	}
	// The gauges read the store too: under the processor's deadline, so that a silent
	// connection cannot hold them (or the drain's last refresh) forever.
	gauges := outbox.BoundStore(store, p.Config().RoundTripTimeout, log)

	if rc.metricsAddr != "" {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		ln, err := net.Listen("tcp", rc.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server failed", "err", err)
			}
		})
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := m.Refresh(ctx, gauges); err != nil {
			log.Warn("refreshing outbox gauges failed", "err", err)
		}
		wg.Go(func() { m.Run(runCtx, gauges, o.metricsInterval) })
		log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
		if env.onListen != nil {
			env.onListen(ln.Addr().String())
		}
	}

	if o.once {
		n, err := p.Drain(ctx)
		_ = m.Refresh(context.WithoutCancel(ctx), gauges)
		if err != nil {
			return fmt.Errorf("after claiming %d events: %w", n, err)
		}
		st, err := p.Stats(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "claimed %d events; now %d pending, %d retrying, %d given up, %d completed\n",
			n, st.Pending, st.Failed, st.GivenUp, st.Completed)
		return nil
	}

	if err := p.Start(runCtx); err != nil {
		return err
	}
	log.Info("relay started", "store", d.describe(), "sink", redactURL(o.sink))
	if env.onStart != nil {
		env.onStart()
	}
	<-ctx.Done()
	log.Info("signal received: draining in-flight deliveries", "drain_timeout", o.drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	if err := p.Stop(sctx); err != nil {
		return fmt.Errorf("drain: %w (interrupted deliveries were released, to be delivered again)", err)
	}
	cancelRun()
	_ = m.Refresh(context.Background(), gauges)
	log.Info("relay stopped")
	return nil
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// observerList tells every observer.
type observerList []outbox.Observer

func (l observerList) ObserveClaim(n int, d time.Duration) {
	for _, o := range l {
		o.ObserveClaim(n, d)
	}
}

func (l observerList) ObserveDelivery(e outbox.Event, out outbox.Outcome, d time.Duration) {
	for _, o := range l {
		o.ObserveDelivery(e, out, d)
	}
}

// relayFlagNames names the flag behind a refused processor setting.
func relayFlagNames(err error) string {
	msg := strings.TrimPrefix(err.Error(), "outbox: ")
	for field, flag := range map[string]string{
		"Config.LeaseDuration": "--lease", "Config.RoundTripTimeout": "--lease", "Config.PollInterval": "--poll-interval",
		"Config.Retry.MaxAttempts": "--max-attempts", "Config.Retry.Delays": "--retry-delays",
		"Config.BatchSize": "--batch-size", "Config.MaxConcurrent": "--max-concurrent",
	} {
		if strings.HasPrefix(msg, field) {
			return flag + " " + strings.TrimSpace(strings.TrimPrefix(msg, field))
		}
	}
	return msg
}
