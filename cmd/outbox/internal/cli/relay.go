package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sink/kafkasink"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sink/redissink"
)

type relayOpts struct {
	sink string

	// processor
	user           string
	types          listFlag
	batchSize      int
	pollInterval   time.Duration
	maxConcurrent  int
	inFlight       int
	maxAttempts    int
	breakerAfter   int
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
	layout         string
	logConcurrency int
	logCursor      string
	logCursorFrom  string

	// sinks
	envelope    envelopeOpts // --envelope, --cloudevents-source: relay_envelope.go
	sinkTimeout time.Duration
	subject     string
	stream      string
	exchange    string
	headers     listFlag
	bearerToken string
	insecure    bool
	maxLen      int64
	dedupWindow time.Duration

	// operations
	metricsAddr     string
	metricsInterval time.Duration
	summaryInterval time.Duration
	logLevel        string
	otel            bool
	otelRoundTrips  bool
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
  kafka://b1:9092,b2…  Kafka, idempotent producer, acks=all, to topic --subject; record key =
                       ordering key (else entity ID); header Outbox-Id = event ID. Parameters:
                       ?sasl=plain|scram-sha-256|scram-sha-512 (user:password@ before the
                       brokers), tls=true, tls_ca=FILE, tls_server_name=NAME, tls_insecure=true,
                       client_id=NAME
  redis://… rediss://… Redis Streams XADD to stream --subject, trimmed by --max-len; a repeat
                       of an event ID within --dedup-window is refused by Redis
  sqs://HOST/ACCOUNT/QUEUE  Amazon SQS (the queue URL with sqs:// for https://), in batches
                       of 10; a .fifo queue gets message group = ordering key (else entity
                       ID), deduplication ID = event ID. ?region=, ?endpoint=URL
  sns://arn:aws:sns:REGION:ACCOUNT:TOPIC  Amazon SNS, likewise (FIFO topics too). AWS
                       credentials and region from the SDK's chain (AWS_*, ~/.aws, roles)
  pubsub://PROJECT/TOPIC  Google Cloud Pub/Sub, ordering key = the event's; Application
                       Default Credentials, or PUBSUB_EMULATOR_HOST
  For kafka:// and redis://, a URL with a user and no password takes the password from
  $OUTBOX_SINK_PASSWORD, which keeps it out of the process list.

On SIGINT or SIGTERM the relay stops claiming, lets deliveries in flight finish (up to
--drain-timeout), records their outcomes, hands back what it had claimed but not
started, and exits 0. Past --drain-timeout the deliveries still running are cancelled
and their events handed back, to be delivered again (nothing is lost: delivery is at
least once), and it still exits 0, logging a warning: it stopped as asked, and a
supervisor must not take a requested stop for a crash. Exit 1 is kept for a relay that
failed. A second signal is not needed and not special.

At info level the relay logs a line every --summary-interval (30s) in which something
happened: how many events were delivered, failed (to be retried), given up, and held
by a fault of the sink, and one more for the rest when it stops.

Examples:
  outbox relay --dsn sqlite:./app.db --sink https://api.example.com/outbox/events
  outbox relay --sink nats://127.0.0.1:4222 --subject 'app.{user_id}.{type}' --metrics-addr :9464
  OUTBOX_SINK_TOKEN=… outbox relay --sink https://api.example.com/sync --header 'X-Tenant: acme'
  outbox relay --sink amqp://guest:guest@127.0.0.1:5672/ --exchange amq.topic --batch-size 100
  outbox relay --sink 'kafka://relay:secret@k1:9092,k2:9092/?sasl=scram-sha-512&tls=true' --batch-size 500
  outbox relay --sink redis://127.0.0.1:6379/0 --subject 'events.{type}' --max-len 1000000
  outbox relay --sink http://127.0.0.1:8080/events --once     # deliver what is due, then exit
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=relay outbox relay --sink …
  outbox relay --layout=log --sink http://127.0.0.1:8080/events   # the event log and the events table
  outbox relay --type order.created --log-cursor orders --log-cursor-from relay --sink …

The log layout (PostgreSQL and SQLite; what 'outbox migrate' makes for a new outbox,
and what the relay runs on a store with a log unless told --layout=table; see
docs/log-layout.md): the relay delivers the event log with a log relay, and the events table
with the usual processor, through the same sink with the same retries and breaker. An
event whose delivery from the log fails moves to the events table, with the later
events of its key, and is retried, given up, retried by an operator or discarded there,
as any event; a key with an unfinished event in the table has its new events sent
there, behind it. --batch-size and --poll-interval apply to the log relay only when
given (it reads 500 events at a time, and finds new ones within milliseconds). Paused
types wait in the events table. With --once it delivers the log, then what is due in
the table. On a signal the log relay finishes its batch in flight, delivering and
recording it, and stops (up to --drain-timeout; a batch cut short past it is
delivered again by the next relay).

The log relay reads the log by a named cursor, --log-cursor (relay by default);
relays of one cursor share it. --type scopes the relay, on the log and the table: the
log relay passes the other types by, so a scoped relay needs a cursor of its own
(--log-cursor NAME, refused on the default one), and the scopes together must cover
every type. A new cursor starts at the oldest event the log still holds; to split
running relays into scopes without delivering that again, stop the unscoped relays
and start each scoped one with --log-cursor-from relay, which creates its cursor at
relay's position (ignored once the cursor exists, so restarts keep the flag), then
retire relay with 'outbox migrate --layout=log --drop-log-cursor relay': a cursor no
relay reads holds the log back for good. --user is refused: the log has no user
scope (docs/log-layout.md#splitting-the-log-relay-by-type).

Tracing: with --otel, or when OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
or OTEL_TRACES_EXPORTER=otlp is set, every delivery attempt is a span, a child of the
span the event was enqueued under, exported over OTLP/HTTP (over gRPC with
OTEL_EXPORTER_OTLP_PROTOCOL=grpc). OTEL_SERVICE_NAME names the relay (default
outbox-relay); OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn tracing off.`,
	flags: func(fs *flag.FlagSet) any {
		o := &relayOpts{}
		fs.StringVar(&o.sink, "sink", "", "where to deliver: http(s)://…, nats://…, amqp(s)://…, kafka://…, redis(s)://…, sqs://…, sns://…, pubsub://… (required)")
		fs.StringVar(&o.user, "user", "", "deliver only this user's events (default: all users)")
		fs.Var(&o.types, "type", "deliver only events of this type (repeatable; default: all types)")
		fs.IntVar(&o.batchSize, "batch-size", outbox.DefaultBatchSize, "events claimed per cycle")
		durationVar(fs, &o.pollInterval, "poll-interval", outbox.DefaultPollInterval, "idle wait between cycles (wake-ups cut it short)")
		fs.IntVar(&o.maxConcurrent, "max-concurrent", outbox.DefaultMaxConcurrent, "deliveries at once (HTTP; broker sinks send a batch at once)")
		fs.IntVar(&o.inFlight, "batches-in-flight", outbox.DefaultBatchesInFlight, "batches worked on at once (claims overlap deliveries under a backlog)")
		fs.IntVar(&o.maxAttempts, "max-attempts", outbox.DefaultMaxAttempts, "attempts before an event is given up")
		fs.IntVar(&o.breakerAfter, "breaker-threshold", outbox.DefaultBreakerThreshold, "destination faults in a row (unreachable, credentials rejected, …) that hold deliveries (negative: never hold)")
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
		layoutFromStoreFlag(fs, &o.layout)
		fs.StringVar(&o.logCursor, "log-cursor", postgres.DefaultLogRelayCursor, "--layout=log: the log cursor this relay reads and moves; relays of one cursor share it. Required, of the scope's own, with --type")
		fs.StringVar(&o.logCursorFrom, "log-cursor-from", "", "--layout=log: create --log-cursor at this cursor's position when it does not exist yet (ignored once it does), instead of at the oldest event the log holds")
		fs.IntVar(&o.logConcurrency, "log-concurrency", 0, "--layout=log on PostgreSQL: how many shards of the log this relay delivers at once, each on a connection of its own (default 1; more than the log's --shards count as all)")
		durationVar(fs, &o.sinkTimeout, "sink-timeout", httpsink.DefaultTimeout, "HTTP request timeout / NATS, AMQP, Redis acknowledgement timeout")
		fs.StringVar(&o.subject, "subject", natssink.DefaultSubject, "NATS subject, AMQP routing key, Kafka topic or Redis stream template: {type}, {entity_id}, {user_id}")
		fs.StringVar(&o.stream, "stream", "", "NATS: the stream messages must land in (default: any that captures the subject)")
		fs.StringVar(&o.exchange, "exchange", amqpsink.DefaultExchange, "AMQP exchange")
		o.envelope.register(fs)
		fs.Var(&o.headers, "header", "HTTP: extra request header 'Name: value' (repeatable)")
		fs.StringVar(&o.bearerToken, "bearer-token", "", "HTTP: Authorization bearer token (default $OUTBOX_SINK_TOKEN; prefer the variable)")
		fs.BoolVar(&o.insecure, "insecure-skip-verify", false, "HTTP: do not verify the server's TLS certificate (test servers only)")
		fs.Int64Var(&o.maxLen, "max-len", 0, "Redis: trim each stream to about this many entries (XADD MAXLEN ~; 0 keeps all)")
		durationVar(fs, &o.dedupWindow, "dedup-window", redissink.DefaultDedupWindow, "Redis: how long an event ID is remembered to refuse its repeat")
		fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz at http://ADDR; a bare :PORT binds 127.0.0.1")
		durationVar(fs, &o.metricsInterval, "metrics-interval", 15*time.Second, "how often the pending/processing gauges are refreshed")
		durationVar(fs, &o.summaryInterval, "summary-interval", DefaultSummaryInterval, "how often an info line sums up the deliveries since the last one, when there were any")
		fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
		fs.BoolVar(&o.otel, "otel", false, "export traces over OTLP (default: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER=otlp is set)")
		fs.BoolVar(&o.otelRoundTrips, "otel-round-trips", false, "with tracing, also a span per claim and per settle")
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
	tracing     bool
}

func (o *relayOpts) validate(env *Env) (*relayConfig, error) {
	if o.sink == "" {
		return nil, usagef("--sink is required (http(s)://…, nats://…, amqp://…, kafka://… or redis://…)")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"--batch-size", o.batchSize}, {"--max-concurrent", o.maxConcurrent}, {"--batches-in-flight", o.inFlight}, {"--max-attempts", o.maxAttempts}} {
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
		{"--sink-timeout", o.sinkTimeout}, {"--metrics-interval", o.metricsInterval}, {"--summary-interval", o.summaryInterval},
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
		UserID: o.user, Types: o.types, BatchSize: o.batchSize, PollInterval: o.pollInterval, MaxConcurrent: o.maxConcurrent,
		BatchesInFlight: o.inFlight,
		Retry:           outbox.RetryPolicy{Delays: delays, MaxAttempts: o.maxAttempts},
		Breaker:         outbox.BreakerConfig{Threshold: o.breakerAfter},
		LeaseDuration:   o.lease, HandlerTimeout: o.handlerTimeout, CleanupInterval: o.cleanup,
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
	tracing, err := tracingWanted(o.otel, env.Getenv)
	if err != nil {
		return nil, err
	}
	rc.tracing = tracing
	if err := o.envelope.validate(); err != nil {
		return nil, err
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
	if newSink, ok, err := o.cloudSink(); ok { // sqs://, sns://, pubsub://: relay_cloud.go
		return newSink, err
	}
	// A Kafka URL lists several brokers, which url.Parse may refuse: its own parser
	// decides, whatever follows "kafka:" (schemes are case-insensitive).
	if scheme, _, ok := strings.Cut(o.sink, ":"); ok && strings.EqualFold(scheme, "kafka") {
		return o.kafkaSink(env.Getenv("OUTBOX_SINK_PASSWORD"))
	}
	u, err := url.Parse(o.sink)
	if err != nil || u.Scheme == "" {
		return nil, usagef("--sink %q is not a URL (want http(s)://…, nats://…, amqp://…, kafka://… or redis://…)", redactURL(o.sink))
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
			Envelope:    o.envelope.format, CloudEventsSource: o.envelope.source,
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
		cfg := natssink.Config{Subject: o.subject, Stream: o.stream, AckTimeout: o.sinkTimeout,
			Envelope: o.envelope.format, CloudEventsSource: o.envelope.source}
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
		cfg := amqpsink.Config{URL: o.sink, Exchange: o.exchange, RoutingKey: o.subject, ConfirmTimeout: o.sinkTimeout,
			Envelope: o.envelope.format, CloudEventsSource: o.envelope.source}
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
	case "redis", "rediss":
		if pw := env.Getenv("OUTBOX_SINK_PASSWORD"); pw != "" && u.User != nil {
			if _, set := u.User.Password(); !set {
				u.User = url.UserPassword(u.User.Username(), pw)
			}
		}
		return o.redisSink(u.String())
	default:
		return nil, usagef("unknown sink scheme %q in --sink (want http, https, nats, amqp, kafka, redis, sqs, sns or pubsub)", u.Scheme)
	}
}

func (o *relayOpts) kafkaSink(password string) (func(*slog.Logger) (outbox.Handler, func(), error), error) {
	sinkURL := o.sink
	const prefix = "kafka://"
	if password != "" && len(sinkURL) > len(prefix) && strings.EqualFold(sinkURL[:len(prefix)], prefix) {
		// kafka://user@hosts… becomes kafka://user:password@hosts…
		rest := sinkURL[len(prefix):]
		authority := rest
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			authority = rest[:i]
		}
		if at := strings.LastIndexByte(authority, '@'); at >= 0 && !strings.Contains(authority[:at], ":") {
			sinkURL = sinkURL[:len(prefix)] + rest[:at] + ":" + url.PathEscape(password) + rest[at:]
		}
	}
	opts, err := kafkasink.ParseURL(sinkURL)
	if err != nil {
		return nil, usagef("--sink: %v", err)
	}
	cfg := kafkasink.Config{Topic: o.subject, Envelope: o.envelope.format, CloudEventsSource: o.envelope.source}
	if err := cfg.Validate(); err != nil {
		return nil, usagef("--subject: %v", err)
	}
	return func(log *slog.Logger) (outbox.Handler, func(), error) {
		// Connections are made on first use, and a cluster that is down fails deliveries,
		// retried, rather than the start.
		cl, err := kgo.NewClient(append(opts, kgo.WithLogger(kgoLogger{log}))...)
		if err != nil {
			return nil, nil, fmt.Errorf("kafka client: %w", err)
		}
		s, err := kafkasink.New(cl, cfg)
		if err != nil {
			cl.Close()
			return nil, nil, err
		}
		return s, cl.Close, nil
	}, nil
}

func (o *relayOpts) redisSink(sinkURL string) (func(*slog.Logger) (outbox.Handler, func(), error), error) {
	ropts, err := redissink.ParseURL(sinkURL)
	if err != nil {
		return nil, usagef("--sink %s: %v", redactURL(o.sink), err)
	}
	if o.maxLen < 0 {
		return nil, usagef("--max-len must not be negative, got %d", o.maxLen)
	}
	if o.dedupWindow <= 0 {
		return nil, usagef("--dedup-window must be positive, got %s", o.dedupWindow)
	}
	// The URL's own timeouts (?read_timeout=…) win over --sink-timeout.
	if u, err := url.Parse(o.sink); err == nil {
		if !u.Query().Has("read_timeout") {
			ropts.ReadTimeout = o.sinkTimeout
		}
		if !u.Query().Has("write_timeout") {
			ropts.WriteTimeout = o.sinkTimeout
		}
	}
	cfg := redissink.Config{Stream: o.subject, MaxLen: o.maxLen, DedupWindow: o.dedupWindow,
		Envelope: o.envelope.format, CloudEventsSource: o.envelope.source}
	if err := cfg.Validate(); err != nil {
		return nil, usagef("%v", err)
	}
	return func(*slog.Logger) (outbox.Handler, func(), error) {
		rdb := redis.NewClient(ropts)
		s, err := redissink.New(rdb, cfg)
		if err != nil {
			rdb.Close()
			return nil, nil, err
		}
		return s, func() { _ = rdb.Close() }, nil
	}, nil
}

// kgoLogger passes franz-go's warnings and errors to the relay's log.
type kgoLogger struct{ log *slog.Logger }

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	l.log.Log(context.Background(), lv, "kafka: "+msg, keyvals...)
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
	o.layout = logImplied(o.layout, c.set["log-cursor"] || c.set["log-cursor-from"] || c.set["log-concurrency"])
	if err := checkLayout(o.layout, d); err != nil {
		return err
	}
	if c.set["log-concurrency"] && (o.layout != layoutLog || d.pg == nil) {
		return usagef("--log-concurrency is for --layout=log on PostgreSQL, whose log has shards")
	}
	if err := o.checkLogScope(c); err != nil {
		return err
	}
	opened, err := d.open(ctx, false, c.timeout)
	if err != nil {
		return err
	}
	defer opened.close()
	// Left out, --layout is the store's: the log relay beside the Processor when the
	// store has a log, unless the relay is scoped to a user or to types without a
	// cursor of its own, which only the table layout serves.
	if o.layout, err = resolveLayout(ctx, o.layout, d, opened, c.timeout, o.user == "" && len(o.types) == 0); err != nil {
		return err
	}
	var evlog *eventLog
	if o.layout == layoutLog {
		if evlog, err = openLog(ctx, d, opened, c.timeout); err != nil {
			return err
		}
		defer evlog.close()
		if err := o.startCursor(ctx, evlog, c.timeout, log); err != nil {
			return err
		}
	}
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
	tally := &outcomeTally{}
	summary := &outcomeTally{}
	rc.proc.Observers = []outbox.Observer{m, tally, summary}
	if env.observer != nil {
		rc.proc.Observers = append(rc.proc.Observers, env.observer)
	}
	rc.proc.Logger = log
	if rc.tracing {
		tr, flush, err := startTracing(ctx, env.Getenv, o.otelRoundTrips, log)
		if err != nil {
			return err
		}
		defer flush()
		handler = tr.Instrument(&rc.proc, handler)
	}
	p, err := outbox.NewProcessor(store, handler, rc.proc)
	if err != nil {
		return usagef("%v", err)
	}
	// The gauges read the store too: under the processor's deadline, so that a silent
	// connection cannot hold them (or the drain's last refresh) forever.
	gauges := outbox.BoundStore(store, p.Config().RoundTripTimeout, log)

	run := &relayRun{env: env, log: log, store: store, gauges: gauges, p: p, m: m, wg: &wg, runCtx: runCtx}
	var lr *logRelay
	if evlog != nil {
		// The log relay tells the Processor's observers what it does (metrics, the
		// summary lines, traces), except --once's tally, which counts the table's run.
		observers := slices.DeleteFunc(slices.Clone(p.Config().Observers), func(ob outbox.Observer) bool { return ob == outbox.Observer(tally) })
		run.logHold = &logHold{clock: p.Config().Clock}
		observers = append(observers, run.logHold)
		if lr, err = newLogRelay(ctx, evlog, store, handler, o, c, p.Config(), observers, log); err != nil {
			return err
		}
		if rc.metricsAddr != "" {
			if run.logMetrics, err = metrics.NewLog(reg, metrics.LogConfig{Clock: env.Clock, Logger: log}); err != nil {
				return err
			}
			run.logWaiting = boundLogSource{src: lr.waiting, timeout: p.Config().RoundTripTimeout}
		}
	}
	if rc.metricsAddr != "" {
		stop, err := run.serveMetrics(ctx, rc.metricsAddr, reg, o.metricsInterval)
		if err != nil {
			return err
		}
		defer stop()
	}
	if o.once {
		if lr != nil {
			return run.onceLog(ctx, tally, lr)
		}
		return run.once(ctx, tally)
	}

	if err := p.Start(runCtx); err != nil {
		return err
	}
	// The log relay runs until stopLog: its step in flight delivers and commits, within
	// the drain timeout, and is cancelled past it (LogRelay.Stop).
	stopLog := func(context.Context) error { return nil }
	if lr != nil {
		logDone := make(chan struct{})
		wg.Go(func() {
			defer close(logDone)
			if env.beforeLogRun != nil {
				env.beforeLogRun()
			}
			_ = lr.run(runCtx)
		})
		stopLog = func(sctx context.Context) error {
			// A signal right after the start can come before the goroutine above has
			// begun Run: the stop then makes that Run return before its first step.
			err := lr.stop(sctx)
			if env.afterLogStop != nil {
				env.afterLogStop()
			}
			<-logDone
			return err
		}
	}
	started := []any{"store", d.describe(), "sink", redactURL(o.sink), "layout", o.layout}
	if lr != nil {
		started = append(started, "log_cursor", o.logCursor)
	}
	log.Info("relay started", started...)
	summaryDone := make(chan struct{})
	wg.Go(func() {
		ticker := time.NewTicker(o.summaryInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ticker.C:
				summary.logSummary(log, o.summaryInterval, "")
				if env.onSummary != nil {
					env.onSummary()
				}
			case <-summaryDone:
				return
			}
		}
	})
	if env.onStart != nil {
		env.onStart()
	}
	<-ctx.Done()
	log.Info("signal received: draining in-flight deliveries", "drain_timeout", o.drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	var (
		stopped sync.WaitGroup
		logErr  error
	)
	stopped.Go(func() { logErr = stopLog(sctx) })
	err = p.Stop(sctx)
	stopped.Wait()
	err = cmp.Or(err, logErr)
	close(summaryDone)
	summary.logSummary(log, 0, "since the last summary")
	if err != nil {
		// Stopped as asked all the same: what was cut short is delivered again.
		log.Warn("drain timeout passed: deliveries still running were cancelled and their events handed back, to be delivered again",
			"drain_timeout", o.drainTimeout)
	}
	cancelRun()
	_ = m.Refresh(context.Background(), gauges)
	log.Info("relay stopped")
	return nil
}

// checkLogScope checks the log relay's cursor and scope: --log-cursor and
// --log-cursor-from need --layout=log; on it, --type needs a cursor of the scope's own,
// and --user is refused.
func (o *relayOpts) checkLogScope(c *call) error {
	if o.layout != layoutLog {
		for _, f := range []string{"log-cursor", "log-cursor-from"} {
			if c.set[f] {
				return usagef("--%s is for --layout=log: the events table has no cursors", f)
			}
		}
		return nil
	}
	if o.user != "" {
		return usagef("--user with --layout=log: the log relay has no user scope (the log is not kept by user); " +
			"run a relay with --layout=table for one user's events")
	}
	if o.logCursor == "" {
		return usagef("--log-cursor: a cursor's name must not be empty")
	}
	if len(o.types) > 0 && o.logCursor == postgres.DefaultLogRelayCursor {
		return usagef("--type with --layout=log needs --log-cursor NAME, a cursor of the scope's own: a relay scoped to "+
			"types passes the other types by, and on the default cursor (%s) it would move the unscoped relays' cursor "+
			"past them for good (see docs/log-layout.md#splitting-the-log-relay-by-type)", postgres.DefaultLogRelayCursor)
	}
	if c.set["log-cursor-from"] && (o.logCursorFrom == "" || o.logCursorFrom == o.logCursor) {
		return usagef("--log-cursor-from %q: name another cursor than --log-cursor (%s)", o.logCursorFrom, o.logCursor)
	}
	return nil
}

// startCursor makes --log-cursor at --log-cursor-from's position when it does not
// exist yet, and says which start the relay takes. A cursor that exists keeps its own
// position, so that a relay restarted with the same flags goes on where it was.
func (o *relayOpts) startCursor(ctx context.Context, l *eventLog, timeout time.Duration, log *slog.Logger) error {
	if o.logCursorFrom == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exists, notFound, err := l.copyCursor(ctx, o.logCursorFrom, o.logCursor)
	switch {
	case err == nil:
		log.Info("log cursor created at another's position", "cursor", o.logCursor, "from", o.logCursorFrom)
		return nil
	case exists:
		log.Info("log cursor exists: --log-cursor-from ignored", "cursor", o.logCursor, "from", o.logCursorFrom)
		return nil
	case notFound:
		return usagef("--log-cursor-from %s: the log has no cursor %s (no log relay of it has run); leave the flag out "+
			"to start %s at the oldest event the log holds", o.logCursorFrom, o.logCursorFrom, o.logCursor)
	}
	return timedOut(err, timeout)
}

// DefaultSummaryInterval is how often a running relay logs, at info level, what it
// delivered since its last such line (--summary-interval).
const DefaultSummaryInterval = 30 * time.Second

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	// Not parsable (a Kafka broker list, say): hide any user information all the same.
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			return scheme + "://xxxxx@" + rest[i+1:]
		}
	}
	return s
}

// ready is the relay's readiness: the store answers (a lookup of an ID no event has)
// and the circuit breaker is closed (the sink is reachable).
func ready(ctx context.Context, store outbox.Store, p *outbox.Processor) error {
	if _, err := store.Get(ctx, "00000000-0000-0000-0000-000000000000"); err != nil && !errors.Is(err, outbox.ErrNotFound) {
		return fmt.Errorf("store unreachable: %w", err)
	}
	if b := p.Breaker(); b.Open {
		return fmt.Errorf("sink held since %s: %s; next probe at %s", b.OpenedAt.UTC().Format(time.RFC3339),
			strings.Join(holds(b), "; "), b.NextProbe.UTC().Format(time.RFC3339))
	}
	return nil
}

// holds describes what the breaker holds, one line each, naming the cause.
func holds(b outbox.BreakerState) []string {
	var lines []string
	if b.Open {
		lines = append(lines, fmt.Sprintf("delivery held: %s (%s); events wait, attempts not spent", cmp.Or(b.Reason, outbox.ReasonUnreachable), b.Error))
	}
	for _, t := range b.Targets {
		lines = append(lines, fmt.Sprintf("target %s held: %s (%s); events of %s wait, attempts not spent",
			t.Target, t.Reason, t.Error, strings.Join(t.Types, ", ")))
	}
	return lines
}

// outcomeTally counts the outcomes of a run, for --once's exit code and the
// relay's periodic summary.
type outcomeTally struct {
	mu                                      sync.Mutex
	delivered, failed, givenUp, unavailable int
}

func (t *outcomeTally) ObserveClaim(int, time.Duration) {}

func (t *outcomeTally) ObserveDelivery(_ outbox.Event, o outbox.Outcome, _ time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch o.Result {
	case outbox.Delivered:
		t.delivered++
	case outbox.Failed:
		t.failed++
		if o.NextAttemptAt.IsZero() {
			t.givenUp++
		}
	}
}

func (t *outcomeTally) ObserveUnavailable(outbox.Event, error) {
	t.mu.Lock()
	t.unavailable++
	t.mu.Unlock()
}

func (t *outcomeTally) ObserveHold(string, string, bool) {}

func (t *outcomeTally) counts() (delivered, failed, unavailable int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.delivered, t.failed, t.unavailable
}

// logSummary logs, at info level, the outcomes counted since the last call, and
// starts counting afresh; it logs nothing when there were none. interval (when not
// zero) or span says what stretch of time the line covers. Failed counts the attempts
// that failed, given up included; held, the deliveries held by a fault of the sink.
func (t *outcomeTally) logSummary(log *slog.Logger, interval time.Duration, span string) {
	t.mu.Lock()
	delivered, failed, givenUp, held := t.delivered, t.failed, t.givenUp, t.unavailable
	t.delivered, t.failed, t.givenUp, t.unavailable = 0, 0, 0, 0
	t.mu.Unlock()
	if delivered+failed+held == 0 {
		return
	}
	attrs := []any{"delivered", delivered, "failed", failed - givenUp, "given_up", givenUp, "held", held}
	if interval > 0 {
		attrs = append(attrs, "in_the_last", formatDuration(interval))
	} else {
		attrs = append(attrs, "span", span)
	}
	log.Info("deliveries", attrs...)
}

// relayFlags maps the processor's fields to the flags that set them.
var relayFlags = map[string]string{
	"Config.LeaseDuration": "--lease", "Config.RoundTripTimeout": "--lease", "Config.PollInterval": "--poll-interval",
	"Config.Retry.MaxAttempts": "--max-attempts", "Config.Retry.Delays": "--retry-delays",
	"Config.BatchSize": "--batch-size", "Config.MaxConcurrent": "--max-concurrent",
	"Config.BatchesInFlight": "--batches-in-flight", "Config.Breaker.Threshold": "--breaker-threshold",
}

// relayFlagNames names the flag behind a refused processor setting, found by the
// error's field (an element of a list, Delays[2], names the list's flag).
func relayFlagNames(err error) string {
	var fe *outbox.FieldError
	if errors.As(err, &fe) {
		field, _, _ := strings.Cut(fe.Field, "[")
		if flag, ok := relayFlags[field]; ok {
			return flag + " " + fe.Problem
		}
	}
	return strings.TrimPrefix(err.Error(), "outbox: ")
}
