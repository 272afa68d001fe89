package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
)

// The health command.
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
	summary: "Check the alert rules; exit 0 healthy, 1 alerts, 2 cannot tell.",
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
		// The library's own check, so that the flag refuses what the rules refuse (a NaN
		// would silently turn the rule off).
		if err := (outbox.HealthRules{MaxFailureRate: o.maxFailureRate}).Validate(); err != nil {
			return usagef("--max-failure-rate is a share from 0 to 1 (negative: no rule), got %g", o.maxFailureRate)
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
