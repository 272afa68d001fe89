package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The health command.
type healthOpts struct {
	user           string
	staleAfter     time.Duration
	maxStale       int
	maxStuck       int
	maxGivenUp     int
	maxPending     int
	maxFailureRate float64
	maxOldestDue   time.Duration
	window         time.Duration
	json           bool
	layout         string
	logCursors     listFlag
}

// ruleLogBehind is the log layout's rule: the oldest event waiting on the log is older
// than --max-oldest-due (the dashboard's alert and the Prometheus rule OutboxLogBehind).
const ruleLogBehind = "log_behind"

var healthCmd = &command{
	name: "health", args: "[--user ID] [--json]", needsDSN: true,
	summary: "Check the alert rules; exit 0 healthy, 1 alerts, 2 cannot tell.",
	help: `
The rules (each may be disabled with a negative value; docs/alerts-and-operations.md
describes them): any stuck event (processing under an expired lease); any stale event;
an event due for longer than 15m; a failure rate above 10% over the outcomes of the
last --window (15m); any event given up within the window; more than 50 events waiting.
The exit code is for monitoring scripts: 0 healthy, 1 one or more alerts, 2 the store
could not be read (or bad flags).

--layout=log (PostgreSQL and SQLite, after 'outbox migrate --layout=log') adds a rule
on the event log, whose events the rules above do not see: log_behind, the oldest
event waiting for the log relay is older than --max-oldest-due (no log relay runs,
or its destination holds it). It looks at the relays' default cursor (relay), or at
each cursor --log-cursor names (repeatable; for relays scoped by --type): one alert
when any is behind, naming them. The failure-rate rule then counts the log's
deliveries within --window among the window's completed events, beside the failures
the log moved to the events table. With --json, "stats" has the log's "log" object.
The log is not kept by user: --user is refused with it.

Examples:
  outbox health || page-someone
  outbox health --max-pending 1000 --json
  outbox health --layout=log`,
	flags: func(fs *flag.FlagSet) any {
		o := &healthOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		durationVar(fs, &o.staleAfter, "stale-after", 5*time.Minute, "an event due for longer than this is stale")
		fs.IntVar(&o.maxStale, "max-stale", outbox.DefaultMaxStale, "stale events tolerated (negative: no rule)")
		fs.IntVar(&o.maxStuck, "max-stuck", outbox.DefaultMaxStuck, "stuck events tolerated (negative: no rule)")
		fs.IntVar(&o.maxGivenUp, "max-given-up", outbox.DefaultMaxGivenUp, "events given up within --window tolerated (negative: no rule)")
		fs.IntVar(&o.maxPending, "max-pending", outbox.DefaultMaxPending, "waiting events tolerated (negative: no rule)")
		fs.Float64Var(&o.maxFailureRate, "max-failure-rate", outbox.DefaultMaxFailureRate, "failure rate within --window tolerated, 0 to 1 (negative: no rule)")
		durationVar(fs, &o.maxOldestDue, "max-oldest-due", outbox.DefaultMaxOldestDue, "how long an event may be due, and with --layout=log wait on the log (negative: no rule)")
		durationVar(fs, &o.window, "window", outbox.DefaultHealthWindow, "how far back the failure-rate and given-up rules look")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		layoutFromStoreFlag(fs, &o.layout)
		logCursorsFlag(fs, &o.logCursors)
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
		if o.window <= 0 {
			return usagef("--window must be positive, got %s", o.window)
		}
		// The library's own check, so that the flag refuses what the rules refuse (a NaN
		// would silently turn the rule off).
		if err := (outbox.HealthRules{MaxFailureRate: o.maxFailureRate}).Validate(); err != nil {
			return usagef("--max-failure-rate is a share from 0 to 1 (negative: no rule), got %g", o.maxFailureRate)
		}
		o.layout = logImplied(o.layout, len(o.logCursors) > 0)
		if err := logPerUser(o.layout, o.user); err != nil {
			return err
		}
		cursors, err := checkLogCursors(o.layout, o.logCursors)
		if err != nil {
			return err
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		err = withStoreAndLog(ctx, c, o.layout, o.user == "", func(s outbox.Store, l *eventLog) error {
			rules := outbox.HealthRules{MaxStale: o.maxStale, MaxStuck: o.maxStuck, MaxGivenUp: o.maxGivenUp,
				MaxPending: o.maxPending, MaxFailureRate: o.maxFailureRate, MaxOldestDue: o.maxOldestDue, Window: o.window}
			now := env.Clock.Now()
			st, err := s.Stats(ctx, rules.StatsQuery(o.user, now, o.staleAfter))
			if err != nil {
				return err
			}
			lw, err := waitingOnLog(ctx, c, l, cursors, now, o.window)
			if err != nil {
				return err
			}
			st = withLogDeliveries(st, lw)
			// HealthRules treats zero as "the default"; here zero means zero.
			if rules.MaxPending == 0 {
				rules.MaxPending = -1 // checked below: pending > 0
			}
			if rules.MaxFailureRate == 0 {
				rules.MaxFailureRate = -1
			}
			if rules.MaxOldestDue == 0 {
				rules.MaxOldestDue = -1
			}
			h := outbox.CheckHealth(st, rules)
			if o.maxPending == 0 && st.Pending+st.Failed > 0 {
				h.Alerts = append(h.Alerts, outbox.Alert{Rule: "pending", Value: float64(st.Pending + st.Failed),
					Message: fmt.Sprintf("%d events waiting for delivery, above 0", st.Pending+st.Failed)})
			}
			if fr := st.Recent.FailureRate(); o.maxFailureRate == 0 && fr > 0 {
				h.Alerts = append(h.Alerts, outbox.Alert{Rule: "failure_rate", Value: fr,
					Message: fmt.Sprintf("failure rate %.1f%% over the last %s is above 0%%", fr*100, formatDuration(o.window))})
			}
			if o.maxOldestDue == 0 && st.OldestDueAge > 0 {
				h.Alerts = append(h.Alerts, outbox.Alert{Rule: "oldest_due", Value: st.OldestDueAge.Seconds(),
					Message: fmt.Sprintf("an event has been due for %s, above 0s", fmtAge(st.OldestDueAge))})
			}
			// As the dashboard's: zero means zero here too. One alert, naming each cursor
			// behind, with the oldest age as its value.
			if lw != nil && o.maxOldestDue >= 0 {
				if a, ok := logBehind(lw, o.maxOldestDue); ok {
					h.Alerts = append(h.Alerts, a)
				}
			}
			h.Healthy = len(h.Alerts) == 0
			if o.json {
				if err := writeJSON(env.Stdout, struct {
					Healthy bool           `json:"healthy"`
					Alerts  []outbox.Alert `json:"alerts"`
					Stats   statsJSON      `json:"stats"`
				}{h.Healthy, append([]outbox.Alert{}, h.Alerts...), newStatsJSON(st).withLog(lw)}); err != nil {
					return err
				}
			} else if h.Healthy {
				fmt.Fprintf(env.Stdout, "healthy: %d waiting, %d stale, %d stuck, failure rate %s over the last %s",
					st.Pending+st.Failed, st.Stale, st.Stuck, percent(recentFailureRate(st.Recent)), formatDuration(o.window))
				if lw != nil {
					for _, c := range lw.cursors {
						fmt.Fprintf(env.Stdout, "; %d waiting on the log%s, oldest %s", c.events, forCursor(c.name), fmtAge(c.oldestAge))
					}
					fmt.Fprintf(env.Stdout, "; %d delivered from the log", lw.delivered)
				}
				fmt.Fprintln(env.Stdout)
			} else {
				fmt.Fprintf(env.Stdout, "unhealthy: %d alert(s)\n", len(h.Alerts))
				for _, a := range h.Alerts {
					fmt.Fprintf(env.Stdout, "  %-13s %s\n", a.Rule, a.Message)
				}
			}
			if !o.json && len(st.Paused) > 0 {
				fmt.Fprintf(env.Stdout, "paused: %s (%d waiting, not alerted)\n", strings.Join(st.Paused, ", "), st.PausedWaiting())
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

// logBehind is the rule log_behind over the cursors' waits: an alert when the oldest
// event waiting for any of them is older than limit, naming each cursor behind.
func logBehind(lw *onLog, limit time.Duration) (outbox.Alert, bool) {
	var behind []string
	var worst cursorOnLog
	for _, c := range lw.cursors {
		if c.events > 0 && c.oldestAge > limit {
			behind = append(behind, c.name)
			if c.oldestAge > worst.oldestAge {
				worst = c
			}
		}
	}
	if len(behind) == 0 {
		return outbox.Alert{}, false
	}
	msg := fmt.Sprintf("the oldest of %d events waiting on the log%s has waited %s, above %s: is a log relay running "+
		"('outbox relay --layout=log'), and is its destination held?", worst.events, forCursor(worst.name), fmtAge(worst.oldestAge), formatDuration(limit))
	if len(behind) > 1 {
		msg += fmt.Sprintf(" (cursors behind: %s)", strings.Join(behind, ", "))
	}
	return outbox.Alert{Rule: ruleLogBehind, Value: worst.oldestAge.Seconds(), Threshold: limit.Seconds(), Message: msg}, true
}

// forCursor names a cursor other than the CLI's default after "waiting on the log".
func forCursor(name string) string {
	if name == postgres.DefaultLogRelayCursor {
		return ""
	}
	return " for cursor " + name
}
