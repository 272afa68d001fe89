package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/fitiq/outbox"
)

// The retry command.
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
  outbox retry --given-up --type order.created`,
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
		for i, id := range c.args {
			cid, err := outbox.CanonicalID(id) // the spelling every store keeps
			if err != nil {
				return usagef("%q is not an event ID (a UUID)", id)
			}
			c.args[i] = cid
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
	return reportByID(env, "retried", n, len(ids), problems, asJSON)
}

// reportByID tells what an action on events named by ID did ("retried 2 of 3 events"),
// and fails, naming each, when some could not be acted on.
func reportByID(env *Env, done string, n, asked int, problems []string, asJSON bool) error {
	if asJSON {
		if err := writeJSON(env.Stdout, map[string]any{done: n, "problems": append([]string{}, problems...)}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.Stdout, "%s %d of %d events\n", done, n, asked)
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
