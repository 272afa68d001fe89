package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/fitiq/outbox"
)

// The purge command.
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
		fs.Var(requiredDuration{&o.before}, "completed-before", "delete events completed longer ago than this (required)")
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

// requiredDuration is a duration flag without a default: -1 until set, shown as
// nothing in --help (not "(default -1ns)").
type requiredDuration struct{ d *time.Duration }

func (f requiredDuration) String() string {
	if f.d == nil || *f.d < 0 {
		return ""
	}
	return formatDuration(*f.d)
}

func (f requiredDuration) Set(s string) error { return durationFlag(f).Set(s) }
