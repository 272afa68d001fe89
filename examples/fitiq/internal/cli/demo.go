package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
	"github.com/fitiq/outbox/examples/fitiq/internal/faultproxy"
	"github.com/fitiq/outbox/sqlite"
)

const demoUsage = `Usage:
  fitiq demo [flags]

The seed end to end, on this machine, in a temporary directory: the remote API on a
loopback port (its own SQLite database), a client on another SQLite file, and between
them a faulty network (a real loopback HTTP proxy that drops, delays and fails a share
of requests, and goes offline for a while). The demo logs entries of all five kinds,
some of them updated later, while the outbox syncs them; then it checks that every
entry reached the backend exactly once, at its latest version, and nothing was lost.
The exit code is 1 when that check fails.

Flags:
  --entries N      entries to log (default 500; a tenth more are updates of them)
  --seed N         seeds the workload and the network's faults (default 1)
  --offline D      how long the network goes down (default 3s)
  --faults SHARE   share of requests the network drops, delays or fails (default 0.35)
  --quick          a short run for CI: 60 entries, 300ms offline
  --default-retries  use the library's own retry schedule (1s, 5s, 30s, 2m, 10m; 5
                   attempts) instead of the demo's short one: with it, a long offline
                   phase shows that an unreachable API spends no attempt
  --timeout D      how long to wait for the sync before declaring failure (default 2m)
  --keep           keep the temporary directory (databases and the processor's log)
  --trace          trace the run with OpenTelemetry (spans kept in memory) and print
                   the span tree of one synced entry, the most retried: the save, its
                   event's enqueue, each delivery attempt, the backend's handling

Examples:
  fitiq demo
  fitiq demo --entries 2000 --offline 5s --seed 7
  fitiq demo --quick
  fitiq demo --quick --trace
  fitiq demo --offline 60s --default-retries --faults 0.1 --timeout 5m
`

type demoConfig struct {
	entries   int
	seed      uint64
	offline   time.Duration
	offlineAt time.Duration
	faults    float64
	pace      time.Duration // between two saves: a person logging, fast
	timeout   time.Duration
	keep      bool
	trace     bool
	// defaultRetries: the library's retry schedule instead of demoDelays.
	defaultRetries bool
}

// The demo's retry policy: the seed's delays (1s, 5s, 30s, 2m, 10m) would make a
// several-second outage cost minutes, so the demo retries sooner, and more often.
var (
	demoDelays      = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	demoMaxAttempts = 50
)

func runDemo(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	cfg := demoConfig{}
	fs.IntVar(&cfg.entries, "entries", 500, "")
	fs.Uint64Var(&cfg.seed, "seed", 1, "")
	fs.DurationVar(&cfg.offline, "offline", 3*time.Second, "")
	fs.Float64Var(&cfg.faults, "faults", 0.35, "")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "")
	fs.BoolVar(&cfg.keep, "keep", false, "")
	fs.BoolVar(&cfg.trace, "trace", false, "")
	fs.BoolVar(&cfg.defaultRetries, "default-retries", false, "")
	quick := fs.Bool("quick", false, "")
	pos, code, ok := parse(fs, demoUsage, args, out, errOut)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(errOut, "demo", "unexpected arguments %q", pos)
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["entries"] {
			cfg.entries = 60
		}
		if !set["offline"] {
			cfg.offline = 300 * time.Millisecond
		}
	}
	switch {
	case cfg.entries < 10 || cfg.entries > 100_000:
		return usageError(errOut, "demo", "--entries must be from 10 to 100000, got %d", cfg.entries)
	case cfg.faults < 0 || cfg.faults > 0.9:
		return usageError(errOut, "demo", "--faults must be from 0 to 0.9, got %g", cfg.faults)
	case cfg.offline < 0:
		return usageError(errOut, "demo", "--offline must not be negative, got %s", cfg.offline)
	case cfg.timeout <= 0:
		return usageError(errOut, "demo", "--timeout must be positive, got %s", cfg.timeout)
	}
	// Spread the saves over about two seconds (less for small runs), and take the
	// network down a third of the way in, while entries are still being logged.
	cfg.pace = min(2*time.Second/time.Duration(cfg.entries), 4*time.Millisecond)
	cfg.offlineAt = time.Duration(cfg.entries) * cfg.pace / 3

	d := &demo{cfg: cfg, out: out, interactive: isTerminal(out)}
	code = d.run(ctx)
	if err := d.close(); err != nil {
		fmt.Fprintf(errOut, "fitiq demo: cleanup: %v\n", err)
	}
	return code
}

// demo is one run: every part of the seed, on this machine.
type demo struct {
	cfg         demoConfig
	out         io.Writer
	interactive bool

	dir     string
	logFile *os.File
	log     *slog.Logger

	backendDB  *backend.DB
	server     *backend.Server
	stopServer context.CancelFunc
	serverDone chan error
	network    *faultproxy.Proxy
	clientDB   interface{ Close() error }
	app        *fitiq.App
	direct     *fitiq.Client // straight to the backend, for the check
	processor  *outbox.Processor
	seen       *counter
	tracing    *demoTracing // with --trace

	user, token string
	apiURL      string
	logged      atomic.Int64 // entities created so far
	updates     int

	// beforeCheck, when set, runs between the sync and the check: tests use it to lose
	// something on purpose and see the check catch it.
	beforeCheck func(*demo)
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) run(ctx context.Context) int {
	started := time.Now()
	if err := d.setup(ctx); err != nil {
		fmt.Fprintf(d.out, "fitiq demo: %v\n", err)
		return exitFail
	}
	d.intro()
	if err := d.processor.Start(ctx); err != nil {
		d.say("fitiq demo: %v", err)
		return exitFail
	}
	if err := d.sync(ctx); err != nil {
		d.say("\nfitiq demo: %v", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	_ = d.processor.Stop(sctx)
	cancel()
	d.network.SetOffline(false)
	if d.beforeCheck != nil {
		d.beforeCheck(d)
	}

	r, err := d.check(context.WithoutCancel(ctx))
	if err != nil {
		d.say("fitiq demo: check: %v", err)
		return exitFail
	}
	d.report(r, time.Since(started))
	if d.tracing != nil {
		d.say("")
		d.say("One entry's trace (--trace): the save, its event, every delivery attempt, the backend")
		printTrace(d.out, d.tracing.pick())
	}
	if !r.passed() {
		return exitFail
	}
	return exitOK
}

func (d *demo) setup(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "fitiq-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	if d.logFile, err = os.Create(filepath.Join(dir, "demo.log")); err != nil {
		return err
	}
	d.log = slog.New(slog.NewTextHandler(d.logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var (
		tp   trace.TracerProvider
		prop propagation.TextMapPropagator
	)
	if d.cfg.trace {
		d.tracing = newDemoTracing()
		tp, prop = d.tracing.tp, d.tracing.prop
	}

	// The remote API, with its own database, on a loopback port.
	if d.backendDB, err = backend.Open(ctx, backend.OpenConfig{DSN: filepath.Join(dir, "backend.db")}); err != nil {
		return err
	}
	if _, err := d.backendDB.Migrate(ctx); err != nil {
		return err
	}
	d.user, d.token = "demo-user", newToken()
	if err := d.backendDB.AddToken(ctx, d.user, d.token); err != nil {
		return err
	}
	if d.server, err = backend.New(d.backendDB, backend.Config{Logger: d.log, TracerProvider: tp, Propagator: prop}); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.stopServer, d.serverDone = cancel, make(chan error, 1)
	go func() { d.serverDone <- d.server.Serve(sctx, ln) }()
	apiURL := "http://" + ln.Addr().String()
	d.apiURL = apiURL

	// The faulty network between the client and the API.
	f := d.cfg.faults
	if d.network, err = faultproxy.Start(faultproxy.Config{
		Target: apiURL, Seed: d.cfg.seed, Logger: d.log,
		DropRequest: f * 0.2, DropResponse: f * 0.2, Fail: f * 0.2, Throttle: f * 0.03, Delay: f * 0.37,
		MaxDelay: 150 * time.Millisecond,
	}); err != nil {
		return err
	}

	// The client: its SQLite file, the app, and the outbox processor syncing through the network.
	db, err := sqlite.Open(filepath.Join(dir, "client.db"), sqlite.OpenConfig{})
	if err != nil {
		return err
	}
	d.clientDB = db
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		return err
	}
	if _, err := fitiq.Migrate(ctx, db); err != nil {
		return err
	}
	scfg := sqlite.Config{Logger: d.log}
	if d.tracing != nil {
		scfg.OnEnqueue = d.tracing.outbox.EnqueueHook // each event records the trace it is logged under
	}
	store, err := sqlite.New(ctx, db, scfg)
	if err != nil {
		return err
	}
	if d.app, err = fitiq.NewApp(ctx, store, fitiq.Config{UserID: d.user, Source: "demo", Device: "fitiq-demo", TracerProvider: tp}); err != nil {
		return err
	}
	viaNetwork, err := fitiq.NewClient(fitiq.ClientConfig{BaseURL: d.network.URL(), Token: d.token, Timeout: 2 * time.Second, Propagator: prop})
	if err != nil {
		return err
	}
	if d.direct, err = fitiq.NewClient(fitiq.ClientConfig{BaseURL: apiURL, Token: d.token}); err != nil {
		return err
	}
	retry := outbox.RetryPolicy{Delays: demoDelays, MaxAttempts: demoMaxAttempts}
	if d.cfg.defaultRetries {
		retry = outbox.RetryPolicy{Delays: outbox.DefaultRetryDelays, MaxAttempts: outbox.DefaultMaxAttempts}
	}
	handlers, err := fitiq.NewHandlers(fitiq.SyncConfig{Local: d.app.Local(), Client: viaNetwork, MaxAttempts: retry.MaxAttempts, Logger: d.log})
	if err != nil {
		return err
	}
	d.seen = &counter{}
	pcfg := outbox.Config{
		UserID: d.user, BatchSize: 40, MaxConcurrent: 8, PollInterval: 100 * time.Millisecond,
		Retry:           retry,
		HandlerTimeout:  3 * time.Second,
		CleanupInterval: -1, // keep completed events: the statistics below count them
		Logger:          d.log, Observers: []outbox.Observer{d.seen},
	}
	var handler outbox.Handler = handlers
	if d.tracing != nil {
		handler = d.tracing.outbox.Instrument(&pcfg, handler)
	}
	d.processor, err = outbox.NewProcessor(store, handler, pcfg)
	return err
}

func (d *demo) intro() {
	c := d.cfg
	d.say("FitIQ demo — the outbox, end to end, on this machine")
	d.say("  backend  %s (the remote API; its own SQLite database)", d.apiURL)
	d.say("  network  %s, a proxy in front of it that, of every 100 requests,", d.network.URL())
	d.say("           drops about %.0f before the API and %.0f after it (answer lost), fails %.0f (503/429)", c.faults*20, c.faults*20, c.faults*23)
	d.say("           and delays %.0f; and goes fully offline for %s, %s in (seed %d)", c.faults*37, c.offline, c.offlineAt.Round(time.Millisecond), c.seed)
	d.say("  client   a SQLite file with the app's tables and the outbox; user %s", d.user)
	if c.defaultRetries {
		d.say("  retries  the library's own: %s, up to %d attempts; offline spends none (the breaker pauses)",
			formatDurations(outbox.DefaultRetryDelays), outbox.DefaultMaxAttempts)
	} else {
		d.say("  retries  shortened for the demo: %s, then every %s, up to %d attempts", formatDurations(demoDelays), demoDelays[len(demoDelays)-1], demoMaxAttempts)
		d.say("           (the seed's 1s, 5s, 30s, 2m, 10m would make each fault cost seconds to minutes)")
	}
	d.say("")
}

// op is one save of the workload: a create of the kind, or an update of an earlier entity.
type op struct {
	kind   fitiq.Kind
	update int // index+1 of the created entity to update; 0 for a create
}

// plan builds the seeded workload: every kind, mostly progress entries, and about one
// update for every ten creates, each after the create it updates.
func (d *demo) plan(rng *rand.Rand) []op {
	n := d.cfg.entries
	kinds := []fitiq.Kind{fitiq.KindProfileMetadata, fitiq.KindProfilePhysical}
	for range n * 18 / 100 {
		kinds = append(kinds, fitiq.KindActivitySnapshot)
	}
	for range n * 12 / 100 {
		kinds = append(kinds, fitiq.KindPhysicalAttribute)
	}
	for len(kinds) < n {
		kinds = append(kinds, fitiq.KindProgressEntry)
	}
	rest := kinds[2:]
	rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	var ops []op
	for i, k := range kinds {
		ops = append(ops, op{kind: k})
		if i > 2 && rng.IntN(10) == 0 {
			ops = append(ops, op{update: rng.IntN(i) + 1})
		}
	}
	return ops
}

// logAll saves the workload, paced like a busy user, and returns when done.
func (d *demo) logAll(ctx context.Context, ops []op, rng *rand.Rand) error {
	now := time.Now()
	var ids []fitiq.Entity
	day := 0
	for _, o := range ops {
		var e fitiq.Entity
		var err error
		if o.update > 0 {
			e, err = d.update(ctx, ids[o.update-1], rng)
			d.updates++
		} else {
			e, err = d.create(ctx, o.kind, rng, now, &day)
			if err == nil {
				ids = append(ids, e)
				d.logged.Add(1)
			}
		}
		if err != nil {
			return fmt.Errorf("log: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.cfg.pace):
		}
	}
	return nil
}

func (d *demo) create(ctx context.Context, k fitiq.Kind, rng *rand.Rand, now time.Time, day *int) (fitiq.Entity, error) {
	ago := func() time.Time { return now.Add(-time.Duration(rng.Int64N(int64(120 * 24 * time.Hour)))) }
	around := func(mid, spread float64, decimals int) float64 {
		v := mid + (rng.Float64()*2-1)*spread
		p := 1.0
		for range decimals {
			p *= 10
		}
		return float64(int64(v*p)) / p
	}
	app := d.app
	switch k {
	case fitiq.KindProgressEntry:
		e := fitiq.ProgressEntry{Date: ago()}
		switch x := rng.IntN(100); {
		case x < 40:
			e.Type, e.Quantity = fitiq.ProgressWeight, around(74, 6, 1)
		case x < 65:
			e.Type, e.Quantity = fitiq.ProgressSteps, float64(rng.IntN(18000))
		case x < 75:
			e.Type, e.Quantity = fitiq.ProgressBodyFat, around(20, 5, 1)
		case x < 85:
			e.Type, e.Quantity = fitiq.ProgressRestingHeartRate, float64(50+rng.IntN(25))
		case x < 93:
			e.Type, e.Quantity = fitiq.ProgressSleep, around(7, 1.5, 1)
		default:
			e.Type, e.Quantity = fitiq.ProgressWater, around(2, 0.8, 1)
		}
		s, err := fitiq.SaveProgressEntryUseCase{App: app}.Execute(ctx, e)
		return &s, err
	case fitiq.KindPhysicalAttribute:
		attrs := []struct {
			a   fitiq.AttributeType
			mid float64
		}{{fitiq.AttributeWaist, 84}, {fitiq.AttributeHip, 98}, {fitiq.AttributeChest, 100}, {fitiq.AttributeNeck, 38}, {fitiq.AttributeArm, 32}, {fitiq.AttributeThigh, 56}}
		pick := attrs[rng.IntN(len(attrs))]
		s, err := fitiq.SavePhysicalAttributeUseCase{App: app}.Execute(ctx, fitiq.PhysicalAttribute{Attribute: pick.a, Value: around(pick.mid, 4, 1), MeasuredAt: ago()})
		return &s, err
	case fitiq.KindActivitySnapshot:
		*day++
		steps := rng.IntN(16000)
		s, err := fitiq.SaveActivitySnapshotUseCase{App: app}.Execute(ctx, fitiq.ActivitySnapshot{
			Date: now.AddDate(0, 0, -*day), Steps: steps, ActiveMinutes: steps / 150, CaloriesBurned: float64(steps) * 0.04,
			DistanceMeters: float64(steps) * 0.75, AvgHeartRate: 65 + rng.IntN(20)})
		return &s, err
	case fitiq.KindProfileMetadata:
		s, err := fitiq.SaveProfileMetadataUseCase{App: app}.Execute(ctx, fitiq.ProfileMetadata{Name: "Demo User", Bio: "Logging everything.", UnitSystem: fitiq.UnitsMetric, Language: "en"})
		return &s, err
	case fitiq.KindProfilePhysical:
		s, err := fitiq.SaveProfilePhysicalUseCase{App: app}.Execute(ctx, fitiq.ProfilePhysical{
			BiologicalSex: fitiq.SexFemale, HeightCm: 150 + float64(rng.IntN(45)), DateOfBirth: time.Date(1970+rng.IntN(30), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), 0, 0, 0, 0, time.UTC)})
		return &s, err
	}
	return nil, fmt.Errorf("unknown kind %s", k)
}

// update re-reads an earlier entity (a user correcting it) and saves a changed version.
func (d *demo) update(ctx context.Context, e fitiq.Entity, rng *rand.Rand) (fitiq.Entity, error) {
	cur, err := d.app.Local().Get(ctx, e.Kind(), e.Base().ID)
	if err != nil {
		return nil, err
	}
	app := d.app
	nudge := float64(1+rng.IntN(5)) / 10
	switch v := cur.(type) {
	case *fitiq.ProgressEntry:
		q := fitiq.ProgressTypes[v.Type]
		if q.Whole {
			nudge = float64(1 + rng.IntN(5))
		}
		if v.Quantity+nudge <= q.Max {
			v.Quantity += nudge
		} else {
			v.Quantity -= nudge
		}
		v.Notes = "corrected"
		s, err := fitiq.SaveProgressEntryUseCase{App: app}.Execute(ctx, *v)
		return &s, err
	case *fitiq.PhysicalAttribute:
		v.Value -= nudge
		s, err := fitiq.SavePhysicalAttributeUseCase{App: app}.Execute(ctx, *v)
		return &s, err
	case *fitiq.ActivitySnapshot:
		v.Steps += 100 + rng.IntN(900)
		s, err := fitiq.SaveActivitySnapshotUseCase{App: app}.Execute(ctx, *v)
		return &s, err
	case *fitiq.ProfileMetadata:
		v.Bio = fmt.Sprintf("Logging everything (edit %d).", v.Version)
		s, err := fitiq.SaveProfileMetadataUseCase{App: app}.Execute(ctx, *v)
		return &s, err
	case *fitiq.ProfilePhysical:
		v.HeightCm += 0.5
		s, err := fitiq.SaveProfilePhysicalUseCase{App: app}.Execute(ctx, *v)
		return &s, err
	}
	return nil, fmt.Errorf("unknown entity %T", cur)
}

// sync logs the workload while the network misbehaves, and shows progress until the
// outbox has nothing left to do (or the timeout passes).
func (d *demo) sync(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(d.cfg.seed, d.cfg.seed^0x5eed))
	ops := d.plan(rng)
	d.say("Logging %d entries of all five kinds, with %d updates, while the outbox syncs them:", d.cfg.entries, len(ops)-d.cfg.entries)

	var wg sync.WaitGroup
	var logErr error
	var logging atomic.Bool
	logging.Store(true)
	wg.Go(func() {
		defer logging.Store(false)
		logErr = d.logAll(ctx, ops, rng)
	})
	wg.Go(func() { // the outage
		select {
		case <-time.After(d.cfg.offlineAt):
		case <-ctx.Done():
			return
		}
		if d.cfg.offline == 0 {
			return
		}
		_ = d.network.SetOffline(true)
		select {
		case <-time.After(d.cfg.offline):
		case <-ctx.Done():
		}
		_ = d.network.SetOffline(false)
	})
	defer wg.Wait()

	bar := &progressBar{w: d.out, interactive: d.interactive, total: d.cfg.entries}
	deadline := time.After(d.cfg.timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		synced, st, err := d.progress(ctx)
		if err != nil {
			return err
		}
		bar.draw(synced, int(d.logged.Load()), st.Failed, d.network.Offline())
		if !logging.Load() {
			if logErr != nil {
				bar.done()
				return logErr
			}
			if st.Pending+st.Processing+st.Failed <= st.Blocked {
				bar.done()
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			bar.done()
			return fmt.Errorf("the outbox did not drain within %s", d.cfg.timeout)
		case <-ctx.Done():
			bar.done()
			return ctx.Err()
		}
	}
}

func (d *demo) progress(ctx context.Context) (synced int, st outbox.Stats, err error) {
	counts, err := d.app.Local().SyncCounts(ctx, d.user)
	if err != nil {
		return 0, st, err
	}
	for _, c := range counts {
		// Entities the backend holds: an update makes an entity pending again, and
		// counting only the synced ones would make the bar go backwards.
		synced += c.WithBackendID
	}
	st, err = d.processor.Stats(ctx)
	return synced, st, err
}

// checkResult is what the final check found.
type checkResult struct {
	entities   int // saved locally
	synced     int // synced locally, with the backend ID the backend holds them under
	atBackend  int // distinct entities the backend holds
	duplicates int // rows beyond one per entity
	lost       int // saved locally, missing at the backend
	stale      int // at the backend at an older version than saved locally
	unexpected int // at the backend, never saved locally
	outbox     outbox.Stats
	server     backend.Stats
	byKind     map[fitiq.Kind][2]int // local, at backend
}

func (r checkResult) passed() bool {
	return r.entities > 0 && r.synced == r.entities && r.duplicates == 0 && r.lost == 0 && r.stale == 0 &&
		r.unexpected == 0 && r.outbox.GivenUp == 0 && r.outbox.Pending+r.outbox.Processing+r.outbox.Failed == 0 &&
		r.server.TooEarly == 0
}

// check compares what the client saved with what the backend serves, read straight
// from the API (not through the faulty network).
func (d *demo) check(ctx context.Context) (checkResult, error) {
	r := checkResult{byKind: map[fitiq.Kind][2]int{}}
	for _, k := range fitiq.Kinds {
		local, err := d.app.Local().List(ctx, k, d.user, 0)
		if err != nil {
			return r, err
		}
		held := map[string][]fitiq.RemoteRecord{}
		for page := 1; ; page++ {
			p, err := d.direct.History(ctx, d.user, k, fitiq.HistoryQuery{Page: page, Limit: fitiq.MaxHistoryLimit})
			if err != nil {
				return r, err
			}
			for _, rec := range p.Items {
				held[rec.ID] = append(held[rec.ID], rec)
			}
			if !p.HasMore {
				break
			}
		}
		r.byKind[k] = [2]int{len(local), len(held)}
		r.atBackend += len(held)
		mine := map[string]bool{}
		for _, e := range local {
			b := e.Base()
			mine[b.ID] = true
			r.entities++
			recs := held[b.ID]
			if len(recs) == 0 {
				r.lost++
				continue
			}
			r.duplicates += len(recs) - 1
			if recs[0].Version != b.Version {
				r.stale++
			}
			if b.SyncStatus == fitiq.SyncSynced && b.BackendID == recs[0].BackendID {
				r.synced++
			}
		}
		for id, recs := range held {
			if !mine[id] {
				r.unexpected += len(recs)
			}
		}
	}
	var err error
	r.outbox, err = d.processor.Stats(ctx)
	r.server = d.server.Stats()
	return r, err
}

func (d *demo) report(r checkResult, took time.Duration) {
	d.say("")
	d.say("Outbox statistics:")
	statsLines(d.out, r.outbox, "  ")
	ns := d.network.Stats()
	d.say("Network: %d requests; %d dropped before the API, %d answers lost after it, %d failed (503), %d throttled (429), %d delayed; offline %s",
		ns.Requests, ns.Faults[faultproxy.DropRequest], ns.Faults[faultproxy.DropResponse], ns.Faults[faultproxy.Fail],
		ns.Faults[faultproxy.Throttle], ns.Faults[faultproxy.Delay], ns.Offline.Round(10*time.Millisecond))
	d.say("Client:  %d delivery attempts, %d failed and retried, %d given up", d.seen.attempts.Load(), d.seen.retrying.Load(), d.seen.givenUp.Load())
	d.say("Backend: %d created, %d duplicate creates answered 409 (idempotency at work), %d updates applied, %d already up to date (carried by a retried create, or replayed), %d updates refused as too early",
		r.server.Created, r.server.DuplicateCreates, r.server.Updated, r.server.StaleUpdates, r.server.TooEarly)
	d.say("")
	d.say("Check:")
	mark := func(ok bool) string {
		if ok {
			return "✓"
		}
		return "✗"
	}
	var kinds []string
	for _, k := range fitiq.Kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d/%d", k, r.byKind[k][1], r.byKind[k][0]))
	}
	d.say("  %s every local entry has its backend ID and is synced (%d/%d)", mark(r.synced == r.entities), r.synced, r.entities)
	d.say("  %s the backend holds each entry exactly once (%s)", mark(r.lost == 0 && r.duplicates == 0 && r.unexpected == 0), strings.Join(kinds, ", "))
	d.say("  %s the backend holds the latest version of each (%d updates logged; %d behind)", mark(r.stale == 0), d.updates, r.stale)
	d.say("  %s no update reached the backend before its create (%d refused as too early)", mark(r.server.TooEarly == 0), r.server.TooEarly)
	d.say("  %s nothing left in the outbox: %d given up, %d waiting", mark(r.outbox.GivenUp == 0 && r.outbox.Pending+r.outbox.Processing+r.outbox.Failed == 0),
		r.outbox.GivenUp, r.outbox.Pending+r.outbox.Processing+r.outbox.Failed)
	if d.cfg.keep {
		d.say("Kept %s (client.db, backend.db, demo.log)", d.dir)
	}
	d.say("")
	d.say("synced %d/%d · duplicates %d · lost %d   (%s)", r.synced, r.entities, r.duplicates+r.unexpected, r.lost+r.stale+(r.entities-r.synced-r.lost), took.Round(100*time.Millisecond))
	if !r.passed() {
		d.say("CHECK FAILED")
	}
}

func (d *demo) close() error {
	var errs []error
	if d.network != nil {
		errs = append(errs, d.network.Close())
	}
	if d.stopServer != nil {
		d.stopServer()
		if err := <-d.serverDone; err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.clientDB != nil {
		errs = append(errs, d.clientDB.Close())
	}
	if d.backendDB != nil {
		errs = append(errs, d.backendDB.Close())
	}
	if d.logFile != nil {
		errs = append(errs, d.logFile.Close())
	}
	if d.dir != "" && !d.cfg.keep {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

// progressBar redraws one line on a terminal, and prints a line per quarter otherwise.
type progressBar struct {
	w           io.Writer
	interactive bool
	total       int
	lastQuarter int
	lastOffline bool
	drawn       bool
}

func (b *progressBar) draw(synced, logged, retrying int, offline bool) {
	const width = 30
	filled := min(synced*width/max(b.total, 1), width)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	net := "network up"
	if offline {
		net = "network OFFLINE"
	}
	line := fmt.Sprintf("  [%s] %d/%d synced · %d logged · %d retrying · %s", bar, synced, b.total, logged, retrying, net)
	if b.interactive {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
		b.drawn = true
		return
	}
	quarter := synced * 4 / max(b.total, 1)
	if !b.drawn || quarter != b.lastQuarter || offline != b.lastOffline {
		fmt.Fprintln(b.w, line)
		b.drawn, b.lastQuarter, b.lastOffline = true, quarter, offline
	}
}

func (b *progressBar) done() {
	if b.interactive && b.drawn {
		fmt.Fprintln(b.w)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
