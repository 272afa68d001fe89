package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// withStore parses the DSN (bad input: exit 2, nothing opened), opens the store, and
// runs fn with it.
func withStore(ctx context.Context, c *call, fn func(s outbox.Store) error) error {
	d, err := parseDSN(c.dsn)
	if err != nil {
		return err
	}
	s, err := d.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.close()
	return fn(s.Store)
}

func noArgs(c *call) error {
	if len(c.args) > 0 {
		return usagef("unexpected argument %q (see 'outbox %s --help')", c.args[0], c.cmd.name)
	}
	return nil
}

// ---- migrate

var migrateCmd = &command{
	name: "migrate", args: "[--dsn DSN]", needsDSN: true,
	summary: "Create or upgrade the outbox schema (embedded, versioned migrations).",
	help: `
Safe to run on an up-to-date store: it applies only what is missing. Every other
command refuses a store that is not migrated; migrate is also the only command that
creates a SQLite file.

Examples:
  outbox migrate --dsn sqlite:./app.db
  OUTBOX_DSN='postgres://postgres@127.0.0.1:5432/app?sslmode=disable' outbox migrate
  outbox migrate --dsn 'postgres://…/app?schema=events&table=outbox'`,
	run: func(ctx context.Context, env *Env, c *call) error {
		if err := noArgs(c); err != nil {
			return err
		}
		d, err := parseDSN(c.dsn)
		if err != nil {
			return err
		}
		s, err := d.open(ctx, true)
		if err != nil {
			return err
		}
		defer s.close()
		applied, err := s.migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Fprintf(env.Stdout, "%s is up to date\n", d.describe())
			return nil
		}
		vs := make([]string, len(applied))
		for i, v := range applied {
			vs[i] = strconv.Itoa(v)
		}
		fmt.Fprintf(env.Stdout, "%s: applied migration %s\n", d.describe(), strings.Join(vs, ", "))
		return nil
	},
}

// ---- stats

type statsOpts struct {
	user       string
	json       bool
	staleAfter time.Duration
}

// statsJSON is Stats for scripts: the age in seconds, the success rate computed.
type statsJSON struct {
	outbox.Stats
	OldestPendingAgeSeconds float64 `json:"oldest_pending_age_seconds"`
	SuccessRate             float64 `json:"success_rate"`
}

func newStatsJSON(s outbox.Stats) statsJSON {
	return statsJSON{Stats: s, OldestPendingAgeSeconds: s.OldestPendingAge.Seconds(), SuccessRate: s.SuccessRate()}
}

var statsCmd = &command{
	name: "stats", args: "[--user ID] [--json]", needsDSN: true,
	summary: "Count events by status and type (the seed's getStatistics).",
	help: `
"failed" counts events that failed and will be retried; "given up" those that will
not be retried without an operator (see 'outbox retry'). Blocked events wait behind a
given-up event of their ordering key.

Examples:
  outbox stats
  outbox stats --user 7f3c… --json | jq .given_up`,
	flags: func(fs *flag.FlagSet) any {
		o := &statsOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		durationVar(fs, &o.staleAfter, "stale-after", 5*time.Minute, "an event due for longer than this is stale")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*statsOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			st, err := s.Stats(ctx, outbox.StatsQuery{UserID: o.user, Now: env.Clock.Now(), StaleAfter: o.staleAfter})
			if err != nil {
				return err
			}
			if o.json {
				return writeJSON(env.Stdout, newStatsJSON(st))
			}
			printStats(env, st)
			return nil
		})
	},
}

func printStats(env *Env, st outbox.Stats) {
	t := newTable(env.Stdout, "STATUS", "EVENTS")
	t.row("pending", strconv.Itoa(st.Pending))
	t.row("processing", strconv.Itoa(st.Processing))
	t.row("failed (retrying)", strconv.Itoa(st.Failed))
	t.row("given up", strconv.Itoa(st.GivenUp))
	t.row("completed", strconv.Itoa(st.Completed))
	t.row("total", strconv.Itoa(st.Total))
	t.flush()
	fmt.Fprintf(env.Stdout, "\nsuccess rate %.1f%% · stale %d · blocked %d · oldest waiting %s\n",
		st.SuccessRate()*100, st.Stale, st.Blocked, fmtAge(st.OldestPendingAge))
	if len(st.ByType) == 0 {
		return
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "TYPE", "PENDING", "PROCESSING", "FAILED", "GIVEN UP", "COMPLETED")
	for _, typ := range slices.Sorted(maps.Keys(st.ByType)) {
		tc := st.ByType[typ]
		t.row(typ, strconv.Itoa(tc.Pending), strconv.Itoa(tc.Processing), strconv.Itoa(tc.Failed), strconv.Itoa(tc.GivenUp), strconv.Itoa(tc.Completed))
	}
	t.flush()
}

// ---- ls

type lsOpts struct {
	status, typ, user string
	limit             int
	after             int64
	json              bool
}

var lsCmd = &command{
	name: "ls", args: "[--status S] [--type T] [--user ID] [--limit N] [--json]", needsDSN: true,
	summary: "List events, oldest first.",
	help: `
--status is one of pending, processing, completed, failed (retrying or given up) and
given-up. Page with --after SEQ (the last SEQ shown).

Examples:
  outbox ls --status given-up
  outbox ls --type progressEntry --user 7f3c… --limit 20
  outbox ls --status failed --json | jq -r '.[].id'`,
	flags: func(fs *flag.FlagSet) any {
		o := &lsOpts{}
		fs.StringVar(&o.status, "status", "", "only events in this status: pending, processing, completed, failed, given-up")
		fs.StringVar(&o.typ, "type", "", "only events of this type")
		fs.StringVar(&o.user, "user", "", "only this user's events")
		fs.IntVar(&o.limit, "limit", 50, "at most this many events")
		fs.Int64Var(&o.after, "after", 0, "only events after this SEQ (for paging)")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*lsOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		f := outbox.Filter{Type: o.typ, UserID: o.user, Limit: o.limit, AfterSeq: o.after}
		if err := statusFilter(o.status, &f); err != nil {
			return err
		}
		if o.limit <= 0 {
			return usagef("--limit must be positive, got %d", o.limit)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			events, err := s.List(ctx, f)
			if err != nil {
				return err
			}
			return printEvents(env, events, o.json, "no events match")
		})
	},
}

func statusFilter(status string, f *outbox.Filter) error {
	switch status {
	case "":
	case "given-up", "given_up", "givenup":
		f.GivenUp = true
	default:
		st, err := outbox.ParseStatus(status)
		if err != nil {
			return usagef("--status: unknown status %q (want pending, processing, completed, failed or given-up)", status)
		}
		f.Status = st
	}
	return nil
}

func statusText(e outbox.Event) string {
	switch {
	case e.GivenUp():
		return "given up"
	case e.Status == outbox.StatusFailed:
		return "failed (retrying)"
	}
	return string(e.Status)
}

func printEvents(env *Env, events []outbox.Event, asJSON bool, empty string) error {
	if asJSON {
		if events == nil {
			events = []outbox.Event{}
		}
		return writeJSON(env.Stdout, events)
	}
	if len(events) == 0 {
		fmt.Fprintln(env.Stdout, empty)
		return nil
	}
	t := newTable(env.Stdout, "SEQ", "ID", "TYPE", "ENTITY", "USER", "STATUS", "ATTEMPTS", "CREATED", "NEXT ATTEMPT", "LAST ERROR")
	for _, e := range events {
		next := "-"
		if e.Status == outbox.StatusFailed || e.Status == outbox.StatusPending {
			next = fmtTime(e.NextAttemptAt)
		}
		t.row(strconv.FormatInt(e.Seq, 10), e.ID, e.Type, truncate(e.EntityID, 24), truncate(cmp.Or(e.UserID, "-"), 24), statusText(e),
			strconv.Itoa(e.Attempts), fmtTime(e.CreatedAt), next, truncate(cmp.Or(e.LastError, "-"), 60))
	}
	t.flush()
	return nil
}

// ---- show

type showOpts struct{ json bool }

var showCmd = &command{
	name: "show", args: "ID [--json]", needsDSN: true,
	summary: "Show one event in full, with the error of every failed attempt.",
	help: `
Examples:
  outbox show 0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f
  outbox show 0190f4c2-… --json | jq .errors`,
	flags: func(fs *flag.FlagSet) any {
		o := &showOpts{}
		fs.BoolVar(&o.json, "json", false, "print JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*showOpts)
		if len(c.args) != 1 {
			return usagef("want exactly one event ID, got %d arguments", len(c.args))
		}
		id := c.args[0]
		if _, err := uuid.Parse(id); err != nil {
			return usagef("%q is not an event ID (a UUID)", id)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			e, err := s.Get(ctx, id)
			if errors.Is(err, outbox.ErrNotFound) {
				return fmt.Errorf("no event %s", id)
			}
			if err != nil {
				return err
			}
			if o.json {
				return writeJSON(env.Stdout, e)
			}
			printEvent(env, e)
			return nil
		})
	},
}

func printEvent(env *Env, e outbox.Event) {
	t := newTable(env.Stdout)
	t.row("ID", e.ID)
	t.row("Seq", strconv.FormatInt(e.Seq, 10))
	t.row("Type", e.Type)
	t.row("Entity", e.EntityID)
	t.row("User", cmp.Or(e.UserID, "-"))
	t.row("Status", statusText(e))
	maxAttempts := "default"
	if e.MaxAttempts > 0 {
		maxAttempts = strconv.Itoa(e.MaxAttempts)
	}
	t.row("Attempts", fmt.Sprintf("%d (max %s)", e.Attempts, maxAttempts))
	t.row("Priority", strconv.Itoa(e.Priority))
	t.row("New record", strconv.FormatBool(e.IsNewRecord))
	t.row("Ordering key", cmp.Or(e.OrderingKey, "-"))
	t.row("Created", fmtTime(e.CreatedAt))
	t.row("Updated", fmtTime(e.UpdatedAt))
	t.row("Last attempt", fmtTime(e.LastAttemptAt))
	if e.Status == outbox.StatusPending || e.Status == outbox.StatusFailed {
		t.row("Next attempt", fmtTime(e.NextAttemptAt))
	}
	t.row("Completed", fmtTime(e.CompletedAt))
	if e.LeaseOwner != "" {
		t.row("Lease", fmt.Sprintf("%s until %s", e.LeaseOwner, fmtTime(e.LeaseExpiresAt)))
	}
	var md []string
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		md = append(md, k+"="+e.Metadata[k])
	}
	t.row("Metadata", cmp.Or(strings.Join(md, " "), "-"))
	t.row("Payload", cmp.Or(truncate(string(e.Payload), 200), "-"))
	t.row("Last error", cmp.Or(e.LastError, "-"))
	t.flush()
	if len(e.Errors) == 0 {
		return
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "ATTEMPT", "AT", "ERROR")
	for _, ae := range e.Errors {
		t.row(strconv.Itoa(ae.Attempt), fmtTime(ae.At), ae.Error)
	}
	t.flush()
}

// ---- retry

type retryOpts struct {
	givenUp   bool
	typ, user string
	batch     int
	json      bool
}

var retryCmd = &command{
	name: "retry", args: "ID... | --given-up [--type T] [--user ID]", needsDSN: true,
	summary: "Put failed or given-up events back to pending, with a fresh attempt budget.",
	help: `
With IDs, retries those events (unless completed, or held by a running relay).
With --given-up, retries every given-up event (of a type, of a user), in batches, with
a progress report on stderr. A running relay delivers them at its next cycle.

Examples:
  outbox retry 0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f
  outbox retry --given-up --type progressEntry`,
	flags: func(fs *flag.FlagSet) any {
		o := &retryOpts{}
		fs.BoolVar(&o.givenUp, "given-up", false, "retry every given-up event (narrow with --type, --user)")
		fs.StringVar(&o.typ, "type", "", "with --given-up: only events of this type")
		fs.StringVar(&o.user, "user", "", "with --given-up: only this user's events")
		fs.IntVar(&o.batch, "batch-size", 500, "events reset per transaction")
		fs.BoolVar(&o.json, "json", false, "print the result as JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*retryOpts)
		switch {
		case o.givenUp && len(c.args) > 0:
			return usagef("give event IDs or --given-up, not both")
		case !o.givenUp && len(c.args) == 0:
			return usagef("give event IDs, or --given-up to retry every given-up event")
		case !o.givenUp && (o.typ != "" || o.user != ""):
			return usagef("--type and --user narrow --given-up; with IDs they do not apply")
		case o.batch <= 0:
			return usagef("--batch-size must be positive, got %d", o.batch)
		}
		for _, id := range c.args {
			if _, err := uuid.Parse(id); err != nil {
				return usagef("%q is not an event ID (a UUID)", id)
			}
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			if o.givenUp {
				return retryGivenUp(ctx, env, s, o)
			}
			return retryIDs(ctx, env, s, c.args, o.json)
		})
	},
}

func retryIDs(ctx context.Context, env *Env, s outbox.Store, ids []string, asJSON bool) error {
	n, err := s.Retry(ctx, env.Clock.Now(), outbox.Filter{IDs: ids})
	if err != nil {
		return err
	}
	var problems []string
	if n < len(ids) {
		for _, id := range ids {
			e, err := s.Get(ctx, id)
			switch {
			case errors.Is(err, outbox.ErrNotFound):
				problems = append(problems, fmt.Sprintf("no event %s", id))
			case err != nil:
				return err
			case e.Status == outbox.StatusCompleted:
				problems = append(problems, fmt.Sprintf("event %s is completed: nothing to retry", id))
			case e.Status == outbox.StatusProcessing:
				problems = append(problems, fmt.Sprintf("event %s is being delivered by %s", id, e.LeaseOwner))
			}
		}
	}
	if asJSON {
		if err := writeJSON(env.Stdout, map[string]any{"retried": n, "problems": append([]string{}, problems...)}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.Stdout, "retried %d of %d events\n", n, len(ids))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func retryGivenUp(ctx context.Context, env *Env, s outbox.Store, o *retryOpts) error {
	now := env.Clock.Now()
	st, err := s.Stats(ctx, outbox.StatsQuery{UserID: o.user, Now: now, StaleAfter: time.Minute})
	if err != nil {
		return err
	}
	total := st.GivenUp
	if o.typ != "" {
		total = st.ByType[o.typ].GivenUp
	}
	bar := newProgress(env, "retrying given-up events", total, o.batch)
	retried := 0
	var after int64
	for {
		// Page through the given-up events by Seq and reset each page in one
		// transaction: a huge retry never holds the table for long, and an
		// interruption leaves every event either reset or untouched.
		page, err := s.List(ctx, outbox.Filter{GivenUp: true, Type: o.typ, UserID: o.user, AfterSeq: after, Limit: o.batch})
		if err != nil {
			bar.finish()
			return fmt.Errorf("after retrying %d: %w", retried, err)
		}
		if len(page) == 0 {
			break
		}
		ids := make([]string, len(page))
		for i, e := range page {
			ids[i] = e.ID
		}
		after = page[len(page)-1].Seq
		n, err := s.Retry(ctx, now, outbox.Filter{IDs: ids, GivenUp: true})
		if err != nil {
			bar.finish()
			return fmt.Errorf("after retrying %d: %w", retried, err)
		}
		retried += n
		bar.add(n)
		if err := ctx.Err(); err != nil {
			bar.finish()
			return fmt.Errorf("interrupted after retrying %d: %w", retried, err)
		}
	}
	bar.finish()
	if o.json {
		return writeJSON(env.Stdout, map[string]int{"retried": retried})
	}
	fmt.Fprintf(env.Stdout, "retried %d given-up events\n", retried)
	return nil
}

// ---- purge

type purgeOpts struct {
	before time.Duration
	batch  int
	json   bool
}

var purgeCmd = &command{
	name: "purge", args: "--completed-before DURATION", needsDSN: true,
	summary: "Delete completed events older than DURATION (what the relay's cleanup does hourly).",
	help: `
Only completed events are ever deleted. DURATION is counted back from now and takes
s, m, h and d units. Deletes in batches, with a progress report on stderr.

Examples:
  outbox purge --completed-before 7d
  outbox purge --completed-before 36h --json`,
	flags: func(fs *flag.FlagSet) any {
		o := &purgeOpts{before: -1}
		fs.Var(durationFlag{&o.before}, "completed-before", "delete events completed longer ago than this (required)")
		fs.IntVar(&o.batch, "batch-size", 1000, "events deleted per statement")
		fs.BoolVar(&o.json, "json", false, "print the result as JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*purgeOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		switch {
		case o.before == -1:
			return usagef("--completed-before is required (e.g. --completed-before 7d)")
		case o.before < 0:
			return usagef("--completed-before must not be negative, got %s", o.before)
		case o.batch <= 0:
			return usagef("--batch-size must be positive, got %d", o.batch)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			now := env.Clock.Now()
			before := now.Add(-o.before)
			st, err := s.Stats(ctx, outbox.StatsQuery{Now: now, StaleAfter: time.Minute})
			if err != nil {
				return err
			}
			// The total is every completed event; those completed since `before` are
			// kept, so the bar may end short of it.
			bar := newProgress(env, "purging completed events", st.Completed, o.batch)
			deleted := 0
			for {
				n, err := s.DeleteCompleted(ctx, before, o.batch)
				deleted += n
				bar.add(n)
				if err != nil {
					bar.finish()
					return fmt.Errorf("after deleting %d: %w", deleted, err)
				}
				if n < o.batch {
					break
				}
				if err := ctx.Err(); err != nil {
					bar.finish()
					return fmt.Errorf("interrupted after deleting %d: %w", deleted, err)
				}
			}
			bar.finish()
			if o.json {
				return writeJSON(env.Stdout, map[string]any{"deleted": deleted, "completed_before": before.UTC()})
			}
			fmt.Fprintf(env.Stdout, "deleted %d events completed before %s\n", deleted, fmtTime(before))
			return nil
		})
	},
}

// ---- stale

type staleOpts struct {
	user       string
	staleAfter time.Duration
	limit      int
	json       bool
}

var staleCmd = &command{
	name: "stale", args: "[--stale-after 5m] [--user ID] [--json]", needsDSN: true,
	summary: "List events due for longer than the stale threshold (the seed's getStaleEvents).",
	help: `
A stale event is pending, or failed and due for retry, for longer than --stale-after:
no relay is delivering it. Check that a relay runs ('outbox health').

Examples:
  outbox stale
  outbox stale --stale-after 1h --json`,
	flags: func(fs *flag.FlagSet) any {
		o := &staleOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		durationVar(fs, &o.staleAfter, "stale-after", 5*time.Minute, "an event due for longer than this is stale")
		fs.IntVar(&o.limit, "limit", 50, "at most this many events")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*staleOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		if o.limit <= 0 {
			return usagef("--limit must be positive, got %d", o.limit)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			events, err := s.List(ctx, outbox.Filter{UserID: o.user, DueBefore: env.Clock.Now().Add(-o.staleAfter), Limit: o.limit})
			if err != nil {
				return err
			}
			return printEvents(env, events, o.json, fmt.Sprintf("no stale events (none due for longer than %s)", formatDuration(o.staleAfter)))
		})
	},
}

// ---- health

type healthOpts struct {
	user           string
	staleAfter     time.Duration
	maxStale       int
	maxPending     int
	maxFailureRate float64
	json           bool
}

var healthCmd = &command{
	name: "health", args: "[--user ID] [--json]", needsDSN: true,
	summary: "Check the seed's alert rules; exit 0 healthy, 1 alerts, 2 cannot tell.",
	help: `
The rules (each may be disabled with a negative value): any stale event; a failure
rate (retrying and given up, of settled events) above 10%; more than 50 events waiting.
The exit code is for monitoring scripts: 0 healthy, 1 one or more alerts, 2 the store
could not be read (or bad flags).

Examples:
  outbox health || page-someone
  outbox health --max-pending 1000 --json`,
	flags: func(fs *flag.FlagSet) any {
		o := &healthOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		durationVar(fs, &o.staleAfter, "stale-after", 5*time.Minute, "an event due for longer than this is stale")
		fs.IntVar(&o.maxStale, "max-stale", 0, "stale events tolerated (negative: no rule)")
		fs.IntVar(&o.maxPending, "max-pending", 50, "waiting events tolerated (negative: no rule)")
		fs.Float64Var(&o.maxFailureRate, "max-failure-rate", 0.10, "failure rate tolerated, 0 to 1 (negative: no rule)")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*healthOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		if o.maxFailureRate > 1 {
			return usagef("--max-failure-rate is a share from 0 to 1, got %g", o.maxFailureRate)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		err := withStore(ctx, c, func(s outbox.Store) error {
			st, err := s.Stats(ctx, outbox.StatsQuery{UserID: o.user, Now: env.Clock.Now(), StaleAfter: o.staleAfter})
			if err != nil {
				return err
			}
			rules := outbox.HealthRules{MaxStale: o.maxStale, MaxPending: o.maxPending, MaxFailureRate: o.maxFailureRate}
			// HealthRules treats zero as "the default"; here zero means zero.
			if rules.MaxPending == 0 {
				rules.MaxPending = -1 // checked below: pending > 0
			}
			if rules.MaxFailureRate == 0 {
				rules.MaxFailureRate = -1
			}
			h := outbox.CheckHealth(st, rules)
			if o.maxPending == 0 && st.Pending+st.Failed > 0 {
				h.Alerts = append(h.Alerts, outbox.Alert{Rule: "pending", Value: float64(st.Pending + st.Failed),
					Message: fmt.Sprintf("%d events waiting for delivery, above 0", st.Pending+st.Failed)})
			}
			if o.maxFailureRate == 0 && st.SuccessRate() < 1 {
				h.Alerts = append(h.Alerts, outbox.Alert{Rule: "failure_rate", Value: 1 - st.SuccessRate(),
					Message: fmt.Sprintf("failure rate %.1f%% is above 0%%", (1-st.SuccessRate())*100)})
			}
			h.Healthy = len(h.Alerts) == 0
			if o.json {
				if err := writeJSON(env.Stdout, struct {
					Healthy bool           `json:"healthy"`
					Alerts  []outbox.Alert `json:"alerts"`
					Stats   statsJSON      `json:"stats"`
				}{h.Healthy, append([]outbox.Alert{}, h.Alerts...), newStatsJSON(st)}); err != nil {
					return err
				}
			} else if h.Healthy {
				fmt.Fprintf(env.Stdout, "healthy: %d waiting, %d stale, success rate %.1f%%\n", st.Pending+st.Failed, st.Stale, st.SuccessRate()*100)
			} else {
				fmt.Fprintf(env.Stdout, "unhealthy: %d alert(s)\n", len(h.Alerts))
				for _, a := range h.Alerts {
					fmt.Fprintf(env.Stdout, "  %-13s %s\n", a.Rule, a.Message)
				}
			}
			if !h.Healthy {
				return &exitError{code: ExitFailure}
			}
			return nil
		})
		var ee *exitError
		var ue *usageError
		if err != nil && !errors.As(err, &ee) && !errors.As(err, &ue) {
			return &exitError{code: ExitUsage, msg: "cannot tell: " + err.Error()}
		}
		return err
	},
}
