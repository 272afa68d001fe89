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

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The ls command.
type lsOpts struct {
	status, typ, user string
	blocked, stuck    bool
	limit             int
	after             int64
	json              bool
	layout            string
	logCursors        listFlag
}

var lsCmd = &command{
	name: "ls", args: "[--status S | --blocked | --stuck] [--type T] [--user ID] [--limit N] [--json] [--layout=log [--log-cursor NAME]]", needsDSN: true,
	summary: "List events, oldest first.",
	help: `
--status is one of pending, processing, completed, failed (retrying or given up) and
given-up. --blocked lists the events waiting behind a given-up event of their ordering
key (see 'outbox discard'); --stuck those held under an expired lease (their relay is
gone). Page with --after SEQ (the last SEQ shown). The JSON of each event has a given_up
field.

ls lists the events table, where every event has a status, attempts and errors: on the
log layout (the default for a new outbox on PostgreSQL and SQLite) that is the events
whose delivery failed, and the events of their keys that wait behind them.
--layout=log lists what waits on the event log instead: the committed events the log
relays of a cursor have not passed, in the order they read them, up to --limit, with
the events table's columns and JSON (status pending). That is for the relays' default
cursor (relay); --log-cursor NAME lists another's, of every type it has not passed (a
relay scoped by --type passes the others by once it reads them). A name no relay has
run with lists what one would read first: the oldest events the log holds. Listing
creates no cursor and moves none. On a PostgreSQL log of several shards, each shard's
events come in its own order, the shards interleaved by creation time. The log has no
users, leases, retries or given-up events, and is not read by SEQ or by type: --user,
--stuck, --blocked, --status other than pending, --after and --type are refused with
it.

Examples:
  outbox ls --status given-up
  outbox ls --blocked
  outbox ls --type order.created --user 7f3c… --limit 20
  outbox ls --status failed --json | jq -r '.[].id'
  outbox ls --layout=log --limit 20
  outbox ls --layout=log --log-cursor invoices --json | jq -r '.[].type'`,
	flags: func(fs *flag.FlagSet) any {
		o := &lsOpts{}
		fs.StringVar(&o.status, "status", "", "only events in this status: pending, processing, completed, failed, given-up")
		fs.StringVar(&o.typ, "type", "", "only events of this type")
		fs.StringVar(&o.user, "user", "", "only this user's events")
		fs.BoolVar(&o.blocked, "blocked", false, "only events blocked behind a given-up event of their ordering key")
		fs.BoolVar(&o.stuck, "stuck", false, "only events processing under an expired lease")
		fs.IntVar(&o.limit, "limit", 50, "at most this many events")
		fs.Int64Var(&o.after, "after", 0, "only events after this SEQ (for paging)")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		layoutFlag(fs, &o.layout)
		fs.Var(&o.logCursors, "log-cursor", "with --layout=log, list what waits for the log relays of this cursor (default "+postgres.DefaultLogRelayCursor+", the relay's default)")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*lsOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		f := outbox.Filter{Type: o.typ, UserID: o.user, Limit: o.limit, AfterSeq: o.after, Blocked: o.blocked}
		if err := statusFilter(o.status, &f); err != nil {
			return err
		}
		if o.stuck {
			f.StuckAt = env.Clock.Now()
		}
		if o.limit <= 0 {
			return usagef("--limit must be positive, got %d", o.limit)
		}
		cursors, err := checkLogCursors(o.layout, o.logCursors)
		if err != nil {
			return err
		}
		if o.layout == layoutLog {
			if err := lsOnLogRefuses(o, c); err != nil {
				return err
			}
			if len(cursors) > 1 {
				return usagef("--log-cursor is given %d times: ls lists what waits for one cursor", len(cursors))
			}
			return withStoreAndLog(ctx, c, o.layout, true, func(_ outbox.Store, l *eventLog) error {
				events, err := l.peek(ctx, cursors[0], o.limit)
				if err != nil {
					return err
				}
				return printEvents(env, events, o.json, "nothing waits on the log for cursor "+cursors[0])
			})
		}
		// On a store with a log, the events table holds only what failed there: a listing
		// for people that finds nothing says where the rest waits. (withStoreAndLog
		// checks the DSN and --layout.)
		layout := o.layout
		if !c.set["layout"] && !o.json {
			layout = layoutFromStore
		}
		return withStoreAndLog(ctx, c, layout, true, func(s outbox.Store, l *eventLog) error {
			events, err := s.List(ctx, f)
			if err != nil {
				return err
			}
			empty := "no events match"
			if l != nil {
				empty += " in the events table, which holds the events that failed to be delivered from the event log (what waits on the log: outbox ls --layout=log)"
			}
			return printEvents(env, events, o.json, empty)
		})
	},
}

// lsOnLogRefuses refuses the filters of ls that the event log cannot answer, saying
// why: everything on it is pending, for every user, and read in its cursor's order.
func lsOnLogRefuses(o *lsOpts, c *call) error {
	if err := logPerUser(o.layout, o.user); err != nil {
		return err
	}
	const table = " (leave out --layout=log to list the events table)"
	switch {
	case o.status != "" && o.status != string(outbox.StatusPending):
		return usagef("--status %s with --layout=log: what waits on the log is pending; a log relay moves the events "+
			"whose delivery failed to the events table%s", o.status, table)
	case o.stuck:
		return usagef("--stuck with --layout=log: the log holds no leases; an event in flight from it stays on the log "+
			"until its relay's cursor passes it%s", table)
	case o.blocked:
		return usagef("--blocked with --layout=log: the events blocked behind a given-up event are in the events "+
			"table, where a log relay moves the later events of its key%s", table)
	case c.set["after"]:
		return usagef("--after with --layout=log: the log is listed in the order its cursor reads it, not by SEQ; " +
			"raise --limit to see further")
	case o.typ != "":
		return usagef("--type with --layout=log: the log is listed in the order its cursor reads it, every type, and " +
			"the first --limit events filtered by type would hide what waits ahead of them; filter the JSON " +
			"(--json | jq) instead")
	}
	return nil
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

// eventJSON is an event for scripts, with whether it was given up spelt out.
type eventJSON struct {
	outbox.Event
	GivenUp bool `json:"given_up"`
}

func toJSON(e outbox.Event) eventJSON { return eventJSON{Event: e, GivenUp: e.GivenUp()} }

func printEvents(env *Env, events []outbox.Event, asJSON bool, empty string) error {
	if asJSON {
		out := make([]eventJSON, len(events))
		for i, e := range events {
			out[i] = toJSON(e)
		}
		return writeJSON(env.Stdout, out)
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

// The show command.
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
		id, err := outbox.CanonicalID(c.args[0]) // the spelling every store keeps
		if err != nil {
			return usagef("%q is not an event ID (a UUID)", c.args[0])
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
				return writeJSON(env.Stdout, toJSON(e))
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
	if e.Unusable != "" { // a row written by SQL that breaks the contract: given up at its claim
		t.row("Unusable", e.Unusable)
	}
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
