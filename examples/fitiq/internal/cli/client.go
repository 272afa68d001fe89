package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
)

const statusUsage = `Usage:
  fitiq status [flags]

Prints the seed's outbox statistics (total, pending, completed, failed, success rate,
stale events), the health alerts that hold, and how many local entries of each kind
are synced, pending or failed.

Flags:
  --json          print JSON instead
` + clientFlagsHelp + `
Examples:
  fitiq status
  fitiq status --json | jq .outbox.pending
`

func runStatus(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	pos, code, ok := parse(fs, statusUsage, args, out, errOut)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(errOut, "status", "unexpected arguments %q", pos)
	}
	c, err := cf.open(ctx, cf.logger(errOut))
	if err != nil {
		return failed(errOut, "status", err)
	}
	defer c.closer()
	stats, err := c.app.Store().Stats(ctx, outbox.HealthRules{}.StatsQuery(cf.user, time.Now(), 5*time.Minute))
	if err != nil {
		return failed(errOut, "status", err)
	}
	counts, err := c.app.Local().SyncCounts(ctx, cf.user)
	if err != nil {
		return failed(errOut, "status", err)
	}
	health := outbox.CheckHealth(stats, outbox.HealthRules{})
	exit := exitOK
	if !health.Healthy {
		exit = exitFail // a script checking the status sees the warning too
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"user": cf.user, "outbox": stats, "local": counts, "health": health})
		return exit
	}
	fmt.Fprintf(out, "Outbox of user %s (%s):\n", cf.user, cf.db)
	statsLines(out, stats, "  ")
	if stats.Blocked > 0 {
		fmt.Fprintf(out, "  Blocked: %d (waiting behind a given-up event of the same entry)\n", stats.Blocked)
	}
	fmt.Fprintln(out, "Local entries:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, k := range fitiq.Kinds {
		n := counts[k]
		fmt.Fprintf(tw, "  %s\t%d\t(%d synced, %d pending, %d failed)\n", k, n.Total, n.Synced, n.Pending, n.Failed)
	}
	tw.Flush()
	if stats.Stale > 0 {
		fmt.Fprintf(out, "⚠ %d stale events detected (due for more than 5m: is the API reachable? run \"fitiq sync\")\n", stats.Stale)
	}
	for _, a := range health.Alerts {
		fmt.Fprintf(out, "⚠ %s\n", a.Message)
	}
	if health.Healthy {
		fmt.Fprintln(out, "Healthy.")
	}
	return exit
}

const syncUsage = `Usage:
  fitiq sync [flags]

Delivers this user's pending events to the remote API, with the seed's retries and
backoff, until none is left waiting (each completed or given up), then prints what
happened. With --watch it keeps running, as the app's background processor does,
until interrupted (Ctrl-C drains deliveries in flight first). An API that cannot be
reached at all (offline) is not a failure of the entries: no attempt is spent on it;
sync stops as soon as it finds the API unreachable (exit code 1), and --watch keeps
probing until the network returns.

Flags:
  --watch                keep running until interrupted
  --timeout D            give up waiting after D (default 15m; exit code 1)
  --type TYPE            deliver only events of this type (repeatable: progressEntry,
                         physicalAttribute, activitySnapshot, profileMetadata,
                         profilePhysical); the others wait for a later sync
  --retry-given-up       put given-up events back in the queue first
  --shadow               the first phase of adopting the outbox: sync directly (the
                         old path), then run the outbox in shadow, delivering nothing,
                         and report every event whose entry the direct path did not
                         bring to the backend (exit code 1 if any)
  --retry-delays LIST    backoff after the 1st, 2nd, … failure (default 1s,5s,30s,2m,10m)
  --max-attempts N       attempts before an event is given up (default 5)
  --batch-size N         events claimed per cycle (default 10)
  --concurrency N        deliveries at once (default 3)
  --poll D               idle poll interval (default 2s)
` + clientFlagsHelp + `
Examples:
  fitiq sync
  fitiq sync --watch -v
  fitiq sync --retry-given-up
  fitiq sync --shadow
  fitiq sync --type progressEntry
`

// syncFlags are the processor settings sync takes.
type syncFlags struct {
	types                       multiFlag
	delays                      string
	maxAttempts, batch, workers int
	poll                        time.Duration
}

func (s *syncFlags) register(fs *flag.FlagSet) {
	fs.Var(&s.types, "type", "")
	fs.StringVar(&s.delays, "retry-delays", "1s,5s,30s,2m,10m", "")
	fs.IntVar(&s.maxAttempts, "max-attempts", outbox.DefaultMaxAttempts, "")
	fs.IntVar(&s.batch, "batch-size", 10, "")
	fs.IntVar(&s.workers, "concurrency", 3, "")
	fs.DurationVar(&s.poll, "poll", 2*time.Second, "")
}

func (s *syncFlags) config(userID string) (outbox.Config, error) {
	delays, err := durations(s.delays)
	if err != nil {
		return outbox.Config{}, fmt.Errorf("--retry-delays: %w", err)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"--max-attempts", s.maxAttempts}, {"--batch-size", s.batch}, {"--concurrency", s.workers}} {
		if f.v < 1 {
			return outbox.Config{}, fmt.Errorf("%s must be at least 1, got %d", f.name, f.v)
		}
	}
	if s.poll <= 0 {
		return outbox.Config{}, fmt.Errorf("--poll must be positive, got %s", s.poll)
	}
	for _, t := range s.types {
		if err := outbox.ValidateType("--type", t); err != nil {
			return outbox.Config{}, err
		}
	}
	return outbox.Config{UserID: userID, Types: s.types, BatchSize: s.batch, MaxConcurrent: s.workers, PollInterval: s.poll,
		Retry: outbox.RetryPolicy{Delays: delays, MaxAttempts: s.maxAttempts}}, nil
}

// counter is an outbox.Observer counting delivery outcomes. With a logger it also
// writes the batch and success lines of the sync's console (at Info).
type counter struct {
	log                                    *slog.Logger
	attempts, delivered, retrying, givenUp atomic.Int64
	// onDelivered, when set, is called after each delivery.
	onDelivered func()
}

func (c *counter) ObserveClaim(n int, _ time.Duration) {
	if c.log != nil && n > 0 {
		c.log.Info("processing batch", "events", n)
	}
}

func (c *counter) ObserveDelivery(e outbox.Event, o outbox.Outcome, _ time.Duration) {
	c.attempts.Add(1)
	switch {
	case o.Result == outbox.Delivered:
		c.delivered.Add(1)
		if c.log != nil {
			c.log.Info("successfully processed event", "event_id", e.ID, "type", e.Type)
		}
		if c.onDelivered != nil {
			c.onDelivered()
		}
	case o.Result == outbox.Failed && o.NextAttemptAt.IsZero():
		c.givenUp.Add(1)
	case o.Result == outbox.Failed:
		c.retrying.Add(1)
	}
}

func runSync(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var sf syncFlags
	sf.register(fs)
	watch := fs.Bool("watch", false, "")
	timeout := fs.Duration("timeout", 15*time.Minute, "")
	retryGivenUp := fs.Bool("retry-given-up", false, "")
	shadow := fs.Bool("shadow", false, "")
	pos, code, ok := parse(fs, syncUsage, args, out, errOut)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(errOut, "sync", "unexpected arguments %q", pos)
	}
	cfg, err := sf.config(cf.user)
	if err != nil {
		return usageError(errOut, "sync", "%v", err)
	}
	if cf.token == "" {
		return usageError(errOut, "sync", "no token: pass --token or set FITIQ_TOKEN (\"fitiq backend --issue %s\" prints one)", cf.user)
	}
	api, err := cf.apiClient()
	if err != nil {
		return usageError(errOut, "sync", "%v", err)
	}
	logger := cf.logger(errOut)
	c, err := cf.open(ctx, logger)
	if err != nil {
		return failed(errOut, "sync", err)
	}
	defer c.closer()
	store := c.app.Store()
	if *retryGivenUp {
		n, err := store.Retry(ctx, time.Now(), outbox.Filter{GivenUp: true, UserID: cf.user})
		if err != nil {
			return failed(errOut, "sync", err)
		}
		fmt.Fprintf(out, "%d given-up events back in the queue\n", n)
	}
	if *shadow {
		if *watch {
			return usageError(errOut, "sync", "--shadow runs once; it does not go with --watch")
		}
		cfg.Logger = logger
		return shadowSync(ctx, c.app, api, cfg, out, errOut)
	}
	handlers, err := fitiq.NewHandlers(fitiq.SyncConfig{Local: c.app.Local(), Client: api, MaxAttempts: cfg.Retry.MaxAttempts, Logger: logger})
	if err != nil {
		return failed(errOut, "sync", err)
	}
	seen := &counter{log: logger}
	cfg.Logger, cfg.Observers = logger, []outbox.Observer{seen}
	p, err := outbox.NewProcessor(store, handlers, cfg)
	if err != nil {
		return usageError(errOut, "sync", "%v", err)
	}
	// A delivery may free the next event of its entry (an update waiting behind its
	// create): ask for another cycle at once rather than at the next poll.
	seen.onDelivered = func() { p.Trigger(cf.user) }
	if err := p.Start(ctx); err != nil {
		return failed(errOut, "sync", err)
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}

	if *watch {
		fmt.Fprintf(out, "syncing %s's events to %s; Ctrl-C to stop\n", cf.user, cf.api)
		<-ctx.Done()
		stop()
		fmt.Fprintf(out, "stopped: %d delivered, %d failed attempts, %d given up\n", seen.delivered.Load(), seen.retrying.Load(), seen.givenUp.Load())
		return exitOK
	}

	deadline := time.NewTimer(*timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var st outbox.Stats
	offline := false
	for done := false; !done; {
		st, err = p.Stats(ctx)
		if err != nil {
			stop()
			return failed(errOut, "sync", err)
		}
		// Drained: nothing of ours waits but what waits behind a given-up event, which no
		// retry frees.
		if waitingFor(st, cfg.Types) == 0 {
			break
		}
		// The API cannot be reached: waiting here would only wait out the timeout. The
		// entries stay queued, with no attempt spent; --watch keeps probing instead.
		if p.Breaker().Open {
			offline = true
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	stop()
	if st, err = p.Stats(context.WithoutCancel(ctx)); err != nil {
		return failed(errOut, "sync", err)
	}
	fmt.Fprintf(out, "delivered %d, failed attempts %d, given up %d\n", seen.delivered.Load(), seen.retrying.Load(), seen.givenUp.Load())
	statsLines(out, st, "  ")
	waiting := waitingFor(st, cfg.Types)
	if others := st.Pending + st.Processing + st.Failed - st.Blocked - waiting; others > 0 && len(cfg.Types) > 0 {
		fmt.Fprintf(out, "%d events of other types wait for a sync that serves them\n", others)
	}
	switch {
	case offline:
		fmt.Fprintf(out, "the API at %s cannot be reached: %d events wait, none given up for it; run \"fitiq sync\" again when online, or use --watch\n", cf.api, waiting)
		return exitFail
	case waiting > 0:
		fmt.Fprintf(out, "%d events still waiting for a retry; run \"fitiq sync\" again or use --watch\n", waiting)
		return exitFail
	case st.GivenUp > 0:
		fmt.Fprintf(out, "%d events given up (see \"fitiq status\"); \"fitiq sync --retry-given-up\" tries them again\n", st.GivenUp)
		return exitFail
	}
	fmt.Fprintln(out, "all synced")
	return exitOK
}

const historyUsage = `Usage:
  fitiq history [kind] [flags]

Lists entries as the remote API holds them (the seed's getProgressHistory), most
recent first, or with --local as this device holds them, with their sync state.

Kinds: progress (default), attributes, activity, profile, physical

Flags:
  --type TYPE     only this type: weight, steps, … or waist, height, …
  --from DATE     from this date (2025-01-01 or RFC 3339), inclusive
  --to DATE       up to this date, inclusive
  --page N        page, from 1 (default 1)
  --limit N       entries per page, at most 100 (default 20)
  --local         list the local database instead of asking the API
  --json          print JSON instead
` + clientFlagsHelp + `
Examples:
  fitiq history --type weight --from 2025-01-01
  fitiq history activity --limit 7
  fitiq history --local
`

var kindAliases = map[string]fitiq.Kind{
	"progress": fitiq.KindProgressEntry, "attributes": fitiq.KindPhysicalAttribute,
	"activity": fitiq.KindActivitySnapshot, "profile": fitiq.KindProfileMetadata, "physical": fitiq.KindProfilePhysical,
}

func parseKind(s string) (fitiq.Kind, error) {
	if k, ok := kindAliases[s]; ok {
		return k, nil
	}
	k, err := fitiq.ParseKind(s)
	if err != nil {
		return "", fmt.Errorf("unknown kind %q (want progress, attributes, activity, profile or physical)", s)
	}
	return k, nil
}

func runHistory(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var typ, from, to string
	var page, limit int
	fs.StringVar(&typ, "type", "", "")
	fs.StringVar(&from, "from", "", "")
	fs.StringVar(&to, "to", "", "")
	fs.IntVar(&page, "page", 1, "")
	fs.IntVar(&limit, "limit", fitiq.DefaultHistoryLimit, "")
	local := fs.Bool("local", false, "")
	asJSON := fs.Bool("json", false, "")
	pos, code, ok := parse(fs, historyUsage, args, out, errOut)
	if !ok {
		return code
	}
	kind := fitiq.KindProgressEntry
	switch len(pos) {
	case 0:
	case 1:
		k, err := parseKind(pos[0])
		if err != nil {
			return usageError(errOut, "history", "%v", err)
		}
		kind = k
	default:
		return usageError(errOut, "history", "unexpected arguments %q", pos[1:])
	}
	q, err := fitiq.ParseHistoryQuery(map[string][]string{
		"type": {typ}, "from": {from}, "to": {to}, "page": {fmt.Sprint(page)}, "limit": {fmt.Sprint(limit)}})
	if err != nil {
		var fe *fitiq.FieldError
		if errors.As(err, &fe) {
			return usageError(errOut, "history", "--%s: %s", fe.Field, fe.Problem)
		}
		return usageError(errOut, "history", "%v", err)
	}

	var rows []historyRow
	title := ""
	if *local {
		c, err := cf.open(ctx, cf.logger(errOut))
		if err != nil {
			return failed(errOut, "history", err)
		}
		defer c.closer()
		all, err := c.app.Local().List(ctx, kind, cf.user, 0)
		if err != nil {
			return failed(errOut, "history", err)
		}
		var matched []fitiq.Entity
		for _, e := range all {
			t, at := e.HistoryKey()
			if (q.Type == "" || t == q.Type) && (q.From.IsZero() || !at.Before(q.From)) && (q.To.IsZero() || !at.After(q.To)) {
				matched = append(matched, e)
			}
		}
		start := min((q.Page-1)*q.Limit, len(matched))
		for _, e := range matched[start:min(start+q.Limit, len(matched))] {
			rows = append(rows, rowOf(e))
		}
		title = fmt.Sprintf("%s of %s on this device (page %d, %d of %d)", kind, cf.user, q.Page, len(rows), len(matched))
	} else {
		api, err := cf.apiClient()
		if err != nil {
			return usageError(errOut, "history", "%v", err)
		}
		p, err := api.History(ctx, cf.user, kind, q)
		if err != nil {
			return failed(errOut, "history", err)
		}
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			_ = enc.Encode(p)
			return exitOK
		}
		for _, rec := range p.Items {
			e, err := rec.Entity()
			if err != nil {
				return failed(errOut, "history", err)
			}
			r := rowOf(e)
			r.date = rec.Date
			e.Base().Version = rec.Version
			r.version, r.state = rec.Version, "at the backend"
			rows = append(rows, r)
		}
		title = fmt.Sprintf("%s of %s at %s (page %d, %d of %d)", kind, cf.user, cf.api, p.Page, len(rows), p.Total)
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
		return exitOK
	}
	fmt.Fprintln(out, title+":")
	if len(rows) == 0 {
		fmt.Fprintln(out, "  (none)")
		return exitOK
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  DATE\tWHAT\tVERSION\tSTATE\tID\tBACKEND ID")
	for _, r := range rows {
		date := "-"
		if !r.date.IsZero() {
			date = r.date.UTC().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", date, r.what, r.version, r.state, r.id, cmpOr(r.backendID, "-"))
	}
	tw.Flush()
	return exitOK
}

type historyRow struct {
	date      time.Time
	what      string
	version   int64
	state     string
	id        string
	backendID string
}

func (r historyRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"date": r.date, "what": r.what, "version": r.version, "state": r.state, "id": r.id, "backend_id": r.backendID})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// rowOf describes an entity in one line.
func rowOf(e fitiq.Entity) historyRow {
	b := e.Base()
	_, at := e.HistoryKey()
	r := historyRow{date: at, version: b.Version, state: string(b.SyncStatus), id: b.ID, backendID: b.BackendID}
	switch v := e.(type) {
	case *fitiq.ProgressEntry:
		r.what = fmt.Sprintf("%s %g %s", v.Type, v.Quantity, fitiq.ProgressTypes[v.Type].Unit)
		if v.Type == fitiq.ProgressSteps {
			r.what = fmt.Sprintf("%g steps", v.Quantity)
		}
	case *fitiq.PhysicalAttribute:
		r.what = fmt.Sprintf("%s %g %s", v.Attribute, v.Value, fitiq.AttributeTypes[v.Attribute].Unit)
	case *fitiq.ActivitySnapshot:
		r.what = fmt.Sprintf("%d steps, %d min, %g kcal", v.Steps, v.ActiveMinutes, v.CaloriesBurned)
	case *fitiq.ProfileMetadata:
		r.what = fmt.Sprintf("%s (%s, %s)", v.Name, v.UnitSystem, v.Language)
	case *fitiq.ProfilePhysical:
		r.what = fmt.Sprintf("%s, %g cm, born %s", v.BiologicalSex, v.HeightCm, v.DateOfBirth.Format(time.DateOnly))
	}
	if r.date.IsZero() {
		r.date = b.UpdatedAt
	}
	return r
}

// afterDirectSync, when set, runs between the direct path and the shadow run: a test
// uses it to lose an entry at the backend and see the shadow run report it.
var afterDirectSync func()

// shadowSync is sync --shadow: the direct path first, then the outbox's events
// compared with what the backend holds, delivering nothing.
func shadowSync(ctx context.Context, app *fitiq.App, api *fitiq.Client, cfg outbox.Config, out, errOut io.Writer) int {
	sent, err := fitiq.DirectSync(ctx, app.Local(), api, cfg.UserID)
	if err != nil {
		return failed(errOut, "sync", err)
	}
	fmt.Fprintf(out, "direct path: %d entries sent\n", sent)
	if afterDirectSync != nil {
		afterDirectSync()
	}
	sh := outbox.NewShadow(fitiq.NewShadowCompare(api))
	p, err := outbox.NewProcessor(app.Store(), sh, cfg)
	if err != nil {
		return usageError(errOut, "sync", "%v", err)
	}
	if _, err := p.Drain(ctx); err != nil {
		return failed(errOut, "sync", err)
	}
	// One difference per entry: an entry updated after its create has several events,
	// and the comparison of each says the same thing.
	type entry struct{ typ, id string }
	var order []entry
	byEntry := map[entry][]outbox.ShadowDifference{}
	for _, d := range sh.Differences() {
		k := entry{d.Event.Type, d.Event.EntityID}
		if byEntry[k] == nil {
			order = append(order, k)
		}
		byEntry[k] = append(byEntry[k], d)
	}
	noun := "differences"
	if len(order) == 1 {
		noun = "difference"
	}
	fmt.Fprintf(out, "shadow run: %d events compared with the backend, %d %s\n", sh.Seen(), len(order), noun)
	for _, k := range order {
		ds := byEntry[k]
		fmt.Fprintf(out, "  %s %s (%d events): %v\n", k.typ, k.id, len(ds), ds[len(ds)-1].Err)
	}
	if len(order) > 0 {
		return exitFail
	}
	return exitOK
}

// waitingFor counts the events a sync of types (all, when empty) still has to settle:
// due, in flight or retrying, less those blocked behind a given-up event.
func waitingFor(st outbox.Stats, types []string) int {
	n := st.Pending + st.Processing + st.Failed
	if len(types) > 0 {
		n = 0
		for _, t := range types {
			tc := st.ByType[t]
			n += tc.Pending + tc.Processing + tc.Failed
		}
	}
	return max(n-st.Blocked, 0)
}
