package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// The discard command.
type discardOpts struct {
	givenUp, blocked bool
	typ, user        string
	batch            int
	yes              bool
	json             bool
}

var discardCmd = &command{
	name: "discard", args: "ID... | --given-up | --blocked [--type T] [--user ID] [--yes]", needsDSN: true,
	summary: "Delete given-up or blocked events for good (an operator's last resort).",
	help: `
With IDs, deletes those events, whatever their status, unless a running relay holds
them. With --given-up and/or --blocked, deletes every event matching (narrow with --type,
--user); without --yes this only lists what would be deleted and exits 1, so a bulk
delete is always confirmed. Deleting the given-up head of an ordering key unblocks the
events behind it: a running relay delivers them, in order, at its next cycle.

Every deleted event is logged on stderr (ID, type, entity, user, status, last error),
so that the log keeps what the table no longer does.

Examples:
  outbox discard 0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f
  outbox discard --given-up --type order.created          # lists them
  outbox discard --given-up --type order.created --yes    # deletes them`,
	flags: func(fs *flag.FlagSet) any {
		o := &discardOpts{}
		fs.BoolVar(&o.givenUp, "given-up", false, "every given-up event (narrow with --type, --user)")
		fs.BoolVar(&o.blocked, "blocked", false, "every event blocked behind a given-up event of its ordering key")
		fs.StringVar(&o.typ, "type", "", "with --given-up/--blocked: only events of this type")
		fs.StringVar(&o.user, "user", "", "with --given-up/--blocked: only this user's events")
		fs.IntVar(&o.batch, "batch-size", 500, "events deleted per statement")
		fs.BoolVar(&o.yes, "yes", false, "with --given-up/--blocked: really delete (without it: list only)")
		fs.BoolVar(&o.json, "json", false, "print the result as JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*discardOpts)
		bulk := o.givenUp || o.blocked
		switch {
		case bulk && len(c.args) > 0:
			return usagef("give event IDs or --given-up/--blocked, not both")
		case !bulk && len(c.args) == 0:
			return usagef("give event IDs, or --given-up or --blocked (with --yes) to discard many")
		case !bulk && (o.typ != "" || o.user != ""):
			return usagef("--type and --user narrow --given-up and --blocked; with IDs they do not apply")
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
		log := slog.New(slog.NewTextHandler(env.Stderr, nil)).With("command", "outbox discard")
		return withStore(ctx, c, func(s outbox.Store) error {
			if !bulk {
				return discardIDs(ctx, env, log, s, c.args, o.json)
			}
			return discardMatching(ctx, env, log, s, o)
		})
	},
}

func logDiscarded(log *slog.Logger, e outbox.Event) {
	log.Info("event discarded", "event_id", e.ID, "type", e.Type, "entity_id", e.EntityID, "user_id", e.UserID,
		"status", statusText(e), "attempts", e.Attempts, "ordering_key", e.OrderingKey, "last_error", e.LastError)
}

func discardIDs(ctx context.Context, env *Env, log *slog.Logger, s outbox.Store, ids []string, asJSON bool) error {
	now := env.Clock.Now()
	var problems []string
	var deletable []outbox.Event
	for _, id := range ids {
		e, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, outbox.ErrNotFound):
			problems = append(problems, fmt.Sprintf("no event %s", id))
		case err != nil:
			return err
		case e.Status == outbox.StatusProcessing && e.LeaseExpiresAt.After(now):
			problems = append(problems, fmt.Sprintf("event %s is being delivered by %s", id, e.LeaseOwner))
		default:
			deletable = append(deletable, e)
		}
	}
	n := 0
	for _, e := range deletable {
		// One at a time, so that the log names exactly what went.
		d, err := s.Delete(ctx, e.ID)
		if err != nil {
			return fmt.Errorf("after discarding %d: %w", n, err)
		}
		if d == 1 {
			logDiscarded(log, e)
		}
		n += d
	}
	return reportByID(env, "discarded", n, len(ids), problems, asJSON)
}

func discardMatching(ctx context.Context, env *Env, log *slog.Logger, s outbox.Store, o *discardOpts) error {
	var filters []outbox.Filter
	if o.givenUp {
		filters = append(filters, outbox.Filter{GivenUp: true, Type: o.typ, UserID: o.user})
	}
	if o.blocked {
		filters = append(filters, outbox.Filter{Blocked: true, Type: o.typ, UserID: o.user})
	}
	if !o.yes {
		var all []outbox.Event
		for _, f := range filters {
			f.Limit = 1000
			events, err := s.List(ctx, f)
			if err != nil {
				return err
			}
			all = append(all, events...)
		}
		if err := printEvents(env, all, o.json, "no events match: nothing to discard"); err != nil {
			return err
		}
		if len(all) == 0 {
			return nil
		}
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("%d events listed (up to 1000 per filter); nothing deleted: add --yes to discard them", len(all))}
	}
	discarded := 0
	for _, f := range filters {
		// Delete page by page; each page is listed again from the start, since the
		// events of the last one are gone.
		f.Limit = o.batch
		for {
			page, err := s.List(ctx, f)
			if err != nil {
				return fmt.Errorf("after discarding %d: %w", discarded, err)
			}
			if len(page) == 0 {
				break
			}
			ids := make([]string, len(page))
			for i, e := range page {
				ids[i] = e.ID
			}
			n, err := s.Delete(ctx, ids...)
			if err != nil {
				return fmt.Errorf("after discarding %d: %w", discarded, err)
			}
			for _, e := range page {
				logDiscarded(log, e)
			}
			discarded += n
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted after discarding %d: %w", discarded, err)
			}
			if n == 0 {
				break // nothing matched was deletable: do not loop on it
			}
		}
	}
	if o.json {
		return writeJSON(env.Stdout, map[string]int{"discarded": discarded})
	}
	fmt.Fprintf(env.Stdout, "discarded %d events\n", discarded)
	return nil
}
