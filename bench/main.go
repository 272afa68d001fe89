// Command bench measures the outbox's PostgreSQL store side by side with River and
// Watermill, in one run, against one PostgreSQL server:
//
//   - enqueue: a business row and its event per transaction, 8 concurrent writers, against
//     a plain two-row transaction as the ceiling;
//   - drain: a backlog of events delivered to a no-op receiver;
//   - latency: commit-to-delivery time of a steady trickle, each system at its defaults.
//
// Rounds interleave the systems (in a rotating order), so that whatever else the machine
// does lands on all of them alike; ratios are taken within a round. Results print as Go
// benchmark lines, which benchstat reads, followed by a summary table.
//
//	cd bench && go run . | tee results/run.txt
//
// The harness creates the database named in -dsn when it is missing and works only in its
// own schemas there (bench_outbox, bench_outbox_tx, bench_outbox_nonotify, bench_log, bench_log_tx,
// bench_river, bench_watermill, bench_plain).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

type options struct {
	dsn          string
	rounds       int
	phases       map[string]bool
	systems      map[string]bool
	writers      int
	enqueueWarm  time.Duration
	enqueueTime  time.Duration
	drainEvents  int
	drainSpecs   []spec
	latencyRates []int
	latencyTime  time.Duration
	latencyWarm  time.Duration
	keep         bool
	cpuProfile   string
	explain      bool
	drainTimeout time.Duration
	cost         bool
	costBlocks   int
	costTxns     int
}

const defaultDrain = "limit:b=1000;outbox:b=1000,c=100,k=2;outbox:b=2000,c=200,k=2;log-limit:b=1000;log-relay:b=1000;log-relay:b=1000,c=100;log-relay:b=1000,o=1;river:w=1000;river:w=10000;watermill"

func main() {
	var o options
	var phases, systems, drain, rates string
	flag.StringVar(&o.dsn, "dsn", cmp.Or(os.Getenv("OUTBOX_BENCH_DSN"), "postgres://postgres@127.0.0.1:5432/outbox_bench?sslmode=disable"),
		"PostgreSQL to measure on; the database is created when missing (env OUTBOX_BENCH_DSN)")
	flag.IntVar(&o.rounds, "count", 5, "rounds; each runs every phase for every system once")
	flag.StringVar(&phases, "phases", "enqueue,drain,latency", "phases to run")
	flag.StringVar(&systems, "systems", "plain,outbox,outbox-tx,outbox-nonotify,log,log-tx,river,watermill",
		"systems to run (outbox: Store.Transact; outbox-tx: EnqueueTx in the caller's transaction; outbox-nonotify: that without NOTIFY, enqueue only; log: the log layout, Log.AppendTx in Log.Transact; log-tx: AppendTx in the caller's transaction, and the system the log-relay and log-limit consumers drain)")
	flag.IntVar(&o.writers, "writers", 8, "enqueue: concurrent writers")
	flag.DurationVar(&o.enqueueWarm, "enqueue-warmup", time.Second, "enqueue: time before counting starts")
	flag.DurationVar(&o.enqueueTime, "enqueue-time", 5*time.Second, "enqueue: measured time per system per round")
	flag.IntVar(&o.drainEvents, "drain-events", 50000, "drain: backlog size")
	flag.StringVar(&drain, "drain", defaultDrain, "drain: consumer configurations, ';'-separated (see variant.go)")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 3*time.Minute, "drain: give up after this long")
	flag.StringVar(&rates, "latency-rates", "10,100", "latency: mean events per second (Poisson arrivals, one per transaction), one measurement each")
	flag.DurationVar(&o.latencyTime, "latency-time", 10*time.Second, "latency: measured time per system per round")
	flag.DurationVar(&o.latencyWarm, "latency-warmup", time.Second, "latency: time the consumer runs before the first event")
	flag.BoolVar(&o.keep, "keep", false, "keep the benchmark schemas (and their last contents) afterwards, for EXPLAIN")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to the file")
	flag.BoolVar(&o.explain, "explain", false, "instead of measuring, print EXPLAIN (ANALYZE, BUFFERS, WAL) of the store's claim and settle statements on a -drain-events backlog")
	flag.BoolVar(&o.cost, "cost", false, "instead of the phases, price each system's enqueue transaction in server CPU: one writer, blocks of -cost-txns transactions alternating between the systems, -cost-blocks each")
	flag.IntVar(&o.costBlocks, "cost-blocks", 20, "cost: blocks per system")
	flag.IntVar(&o.costTxns, "cost-txns", 500, "cost: transactions per block")
	flag.StringVar(&synchronousCommit, "synchronous-commit", "", "PostgreSQL synchronous_commit for every connection (off leaves each commit's WAL flush to the WAL writer); empty leaves the server's")
	flag.IntVar(&fillFactor, "fillfactor", 0, "set this fillfactor (10–100) on our outbox tables after migrating; 0 leaves PostgreSQL's default (100)")
	flag.StringVar(&afterMigrate, "after-migrate", "", "SQL run on our outbox schemas after migrating (for example DROP INDEX outbox_events_completed_by_user), to measure what an index or constraint costs")
	flag.StringVar(&afterMigrateLog, "after-migrate-log", "", "SQL run on the log layout's schemas (log, log-tx) after migrating, to measure what a part of the log's shape costs")
	flag.StringVar(&planCacheMode, "plan-cache-mode", "", "PostgreSQL plan_cache_mode for every connection (auto, force_generic_plan, force_custom_plan); empty leaves the server's")
	flag.Parse()
	if fillFactor != 0 && (fillFactor < 10 || fillFactor > 100) {
		fatal(fmt.Errorf("-fillfactor %d: want 10–100, or 0 for the default", fillFactor))
	}

	o.phases = set(phases)
	o.systems = set(systems)
	var err error
	if o.drainSpecs, err = parseSpecs(drain); err != nil {
		fatal(err)
	}
	for p := range o.phases {
		if !slices.Contains([]string{"enqueue", "drain", "latency"}, p) {
			fatal(fmt.Errorf("-phases: unknown phase %q", p))
		}
	}
	for s := range o.systems {
		if constructors[s] == nil {
			fatal(fmt.Errorf("-systems: unknown system %q", s))
		}
	}
	for r := range strings.SplitSeq(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 1 {
			fatal(fmt.Errorf("-latency-rates: %q is not a positive number", r))
		}
		o.latencyRates = append(o.latencyRates, n)
	}
	if o.rounds < 1 || o.writers < 1 || o.drainEvents < 1 {
		fatal(errors.New("-count, -writers and -drain-events must be positive"))
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if o.explain {
		if err := explain(ctx, o, os.Stdout); err != nil {
			fatal(err)
		}
		return
	}
	if o.cost {
		if err := measureCost(ctx, o, os.Stdout); err != nil {
			fatal(err)
		}
		return
	}
	if err := run(ctx, o, os.Stdout); err != nil {
		pprof.StopCPUProfile()
		fatal(err)
	}
}

func set(csv string) map[string]bool {
	m := map[string]bool{}
	for s := range strings.SplitSeq(csv, ",") {
		if s = strings.TrimSpace(s); s != "" {
			m[s] = true
		}
	}
	return m
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

var constructors = map[string]func(context.Context, string) (system, error){
	"plain":           newPlain,
	"outbox":          newOurs,
	"outbox-tx":       newOursTx,
	"outbox-nonotify": newOursNoNotify,
	"log":             newLog,
	"log-tx":          newLogTx,
	"river":           newRiver,
	"watermill":       newWatermill,
}

// systemOrder is the canonical order of systems in the output: the baseline of each
// phase first, so that benchstat -col /system compares against it.
var systemOrder = []string{"plain", "outbox", "outbox-tx", "outbox-nonotify", "log", "log-tx", "river", "watermill"}

func run(ctx context.Context, o options, out io.Writer) error {
	if err := ensureDatabase(ctx, o.dsn); err != nil {
		return err
	}
	need := map[string]bool{}
	if o.phases["enqueue"] {
		maps := o.systems
		for n := range maps {
			need[n] = true
		}
	}
	if o.phases["drain"] {
		for _, sp := range o.drainSpecs {
			if o.systems[sp.System] {
				need[sp.System] = true
			}
		}
	}
	if o.phases["latency"] {
		for n := range o.systems {
			if enqueueOnly[n] {
				continue
			}
			need[n] = true
		}
	}
	var names []string
	for _, name := range systemOrder {
		if need[name] {
			names = append(names, name)
		}
	}
	systems, closeSystems, err := openSystems(ctx, o, names)
	defer closeSystems()
	if err != nil {
		return err
	}
	if len(systems) == 0 {
		return errors.New("nothing to run: no system takes part in the chosen phases")
	}

	var any system
	for _, s := range systems {
		any = s
		break
	}
	m, err := describeMachine(ctx, any.Pool())
	if err != nil {
		return fmt.Errorf("describe machine: %w", err)
	}
	fmt.Fprint(out, m.header())
	fmt.Fprintf(out, "writers: %d\ndrain-events: %d\n\n", o.writers, o.drainEvents)

	res := newResults()
	for round := range o.rounds {
		var lines []result
		if o.phases["enqueue"] {
			for _, name := range rotate(present(systems, systemOrder), round) {
				r, err := measureEnqueue(ctx, systems[name], o)
				if err != nil {
					return fmt.Errorf("round %d: enqueue %s: %w", round+1, name, err)
				}
				progress("round %d enqueue %-10s %8.0f txn/s  %6.0f WAL B/txn", round+1, name, r.value("txn/s"), r.value("WAL-B/txn"))
				lines = append(lines, r)
			}
		}
		if o.phases["drain"] {
			var specs []spec
			for _, sp := range o.drainSpecs {
				if systems[sp.System] != nil {
					specs = append(specs, sp)
				}
			}
			for _, sp := range rotate(specs, round) {
				r, err := measureDrain(ctx, systems[sp.System], sp.V, o)
				if err != nil {
					return fmt.Errorf("round %d: drain %s: %w", round+1, sp.V.Label, err)
				}
				progress("round %d drain   %-24s %8.0f events/s  %8.1f WAL B/event", round+1, sp.V.Label, r.value("events/s"), r.value("WAL-B/event"))
				lines = append(lines, r)
			}
		}
		if o.phases["latency"] {
			var names []string
			for _, n := range present(systems, systemOrder) {
				if !enqueueOnly[n] {
					names = append(names, n)
				}
			}
			for _, rate := range o.latencyRates {
				for _, name := range rotate(names, round) {
					r, err := measureLatency(ctx, systems[name], rate, o)
					if err != nil {
						return fmt.Errorf("round %d: latency %s at %d/s: %w", round+1, name, rate, err)
					}
					progress("round %d latency %-10s %4d/s  p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (1ms sleep overran by %.1f ms at p99)", round+1, name, rate, r.value("p50-ms"), r.value("p99-ms"), r.value("max-ms"), r.value("late-p99-ms"))
					lines = append(lines, r)
				}
			}
		}
		res.add(canonical(lines, o))
		for _, r := range canonical(lines, o) {
			fmt.Fprintln(out, r.line())
		}
	}
	fmt.Fprintln(out)
	fmt.Fprint(out, res.summary(o, m))
	return nil
}

// openSystems sets up the named systems, each in its schema, with no connection held
// afterwards. closeSystems drops their schemas (unless -keep) and closes them; it is
// to be called even when openSystems fails, for the systems set up before the failure.
func openSystems(ctx context.Context, o options, names []string) (systems map[string]system, closeSystems func(), err error) {
	systems = map[string]system{}
	closeSystems = func() {
		for name, s := range systems {
			if !o.keep {
				if err := dropSchema(context.Background(), s.Pool(), schemaOf[name]); err != nil {
					progress("drop schema of %s: %v", name, err)
				}
			}
			s.Close()
		}
	}
	for _, name := range names {
		progress("setting up %s", name)
		s, err := constructors[name](ctx, o.dsn)
		if err != nil {
			return systems, closeSystems, fmt.Errorf("set up %s: %w", name, err)
		}
		systems[name] = s
		releaseConns(s)
	}
	return systems, closeSystems, nil
}

// enqueueOnly systems take part in the enqueue phase only: the plain ceiling cannot be
// consumed, and the store without NOTIFY would only measure the poll interval.
var enqueueOnly = map[string]bool{"plain": true, "outbox-nonotify": true}

var schemaOf = map[string]string{"plain": schemaPlain, "outbox": schemaOurs, "outbox-tx": schemaOursTx, "outbox-nonotify": schemaOursNN, "log": schemaLog, "log-tx": schemaLogTx, "river": schemaRiver, "watermill": schemaWater}

func present(systems map[string]system, order []string) []string {
	var out []string
	for _, n := range order {
		if systems[n] != nil {
			out = append(out, n)
		}
	}
	return out
}

// rotate starts the list at a different element each round, so that no system always
// runs first (on a cold cache) or last (after the others' autovacuum work).
func rotate[T any](s []T, round int) []T {
	if len(s) == 0 {
		return s
	}
	k := round % len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

// releaseConns closes a pool's idle connections, so that systems waiting their turn
// hold none on the shared server.
func releaseConns(s system) { s.Pool().Reset() }
