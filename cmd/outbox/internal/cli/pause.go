package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/fitiq/outbox"
)

// The pause and resume commands.
type pauseOpts struct {
	types listFlag
	json  bool
}

var pauseCmd = &command{
	name: "pause", args: "[--type T]…", needsDSN: true,
	summary: "Pause event types on every relay of the store; without --type, list the paused ones.",
	help: `
A paused type's events are not claimed by any relay of this store, in any process and
across restarts, until 'outbox resume': they wait as they are, spend no attempts, are
never given up, and are left out of the stale and pending alerts (stats and health
report their backlog). Relays obey a pause at their next claim.

Examples:
  outbox pause --type order.created
  outbox pause                    # the paused types and what waits behind each`,
	flags: func(fs *flag.FlagSet) any {
		o := &pauseOpts{}
		fs.Var(&o.types, "type", "event type to pause (repeatable)")
		fs.BoolVar(&o.json, "json", false, "print JSON (the list)")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*pauseOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if err := checkTypes(o.types); err != nil {
			return err
		}
		return withPauser(ctx, c, func(s outbox.Store, p outbox.TypePauser) error {
			for _, t := range o.types {
				if err := p.PauseType(ctx, t, env.Clock.Now()); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "paused %s\n", t)
			}
			if len(o.types) > 0 {
				return nil
			}
			paused, err := p.PausedTypes(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return writeJSON(env.Stdout, append([]outbox.PausedType{}, paused...))
			}
			if len(paused) == 0 {
				fmt.Fprintln(env.Stdout, "no type is paused")
				return nil
			}
			st, err := s.Stats(ctx, outbox.StatsQuery{Now: env.Clock.Now(), StaleAfter: outbox.DefaultStaleAfter})
			if err != nil {
				return err
			}
			t := newTable(env.Stdout, "TYPE", "PAUSED SINCE", "WAITING")
			for _, p := range paused {
				tc := st.ByType[p.Type]
				t.row(p.Type, fmtTime(p.Since), strconv.Itoa(tc.Pending+tc.Failed))
			}
			t.flush()
			return nil
		})
	},
}

var resumeCmd = &command{
	name: "resume", args: "--type T…", needsDSN: true,
	summary: "Let relays claim paused event types again.",
	help: `
Examples:
  outbox resume --type order.created`,
	flags: func(fs *flag.FlagSet) any {
		o := &pauseOpts{}
		fs.Var(&o.types, "type", "event type to resume (repeatable; required)")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*pauseOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if len(o.types) == 0 {
			return usagef("--type is required")
		}
		if err := checkTypes(o.types); err != nil {
			return err
		}
		return withPauser(ctx, c, func(_ outbox.Store, p outbox.TypePauser) error {
			for _, t := range o.types {
				resumed, err := p.ResumeType(ctx, t)
				if err != nil {
					return err
				}
				if resumed {
					fmt.Fprintf(env.Stdout, "resumed %s\n", t)
				} else {
					fmt.Fprintf(env.Stdout, "%s was not paused\n", t)
				}
			}
			return nil
		})
	},
}

func checkTypes(types []string) error {
	for _, t := range types {
		if err := outbox.ValidateType("--type", t); err != nil {
			return usagef("--type %q: %v", t, err)
		}
	}
	return nil
}

func withPauser(ctx context.Context, c *call, fn func(outbox.Store, outbox.TypePauser) error) error {
	return withStore(ctx, c, func(s outbox.Store) error {
		p, ok := outbox.StoreAs[outbox.TypePauser](s)
		if !ok {
			return usagef("this store cannot pause types")
		}
		return fn(s, p)
	})
}
