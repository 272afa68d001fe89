package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

type migrateOpts struct {
	layout         string
	shards         int
	dropLogCursors listFlag
}

// The migrate command.
var migrateCmd = &command{
	name: "migrate", args: "[--dsn DSN] [--layout=log [--shards N] [--drop-log-cursor NAME]…]", needsDSN: true,
	summary: "Create or upgrade the outbox schema (embedded, versioned migrations).",
	help: `
Safe to run on an up-to-date store: it applies only what is missing. Every other
command refuses a store that is not migrated; migrate is also the only command that
creates a SQLite file.

The layout: on PostgreSQL and SQLite, a new outbox (a store with no events table yet)
is made on the log layout: the event log that applications append to and relays read
by a cursor, and beside it the events table, which holds the events whose delivery
failed (docs/log-layout.md). --layout=table makes the events table alone, as before the
log. An existing outbox keeps its layout: without --layout, migrate brings up to date
what the store has, the log too when it has one. --layout=log adds the log to an
existing events table, or brings it up to date; then run the relays (they take the log
from the store), and move writers to the log when ready; the relays keep delivering
what the events table holds (docs/log-layout.md#moving-onto-the-log-layout). MySQL and
MariaDB have the events table alone.

On PostgreSQL the log is made with --shards shards (1 by default) and keeps them: a
count that differs from an existing log's is refused, and without --shards an existing
log keeps its own. The log's table is outbox_log in the DSN's schema, or <table>_log
when the DSN names table=.

--drop-log-cursor NAME (with --layout=log; repeatable) then drops a cursor of the log
that no relay reads any more, such as the unscoped relays' cursor (relay) once
relays scoped by --type took over from it with --log-cursor-from: a cursor holds
every event from its position on until it is dropped. It is refused while a relay is
delivering from the cursor, and a relay of it started later makes it again, at the
oldest event the log holds.

Examples:
  outbox migrate --dsn sqlite:./app.db                        # a new outbox: the event log and the events table
  outbox migrate --dsn sqlite:./app.db --layout=table         # the events table alone
  OUTBOX_DSN='postgres://postgres@127.0.0.1:5432/app?sslmode=disable' outbox migrate
  outbox migrate --dsn 'postgres://…/app?schema=events&table=outbox'
  outbox migrate --dsn 'mysql://app@127.0.0.1:3306/app'       # or app@tcp(127.0.0.1:3306)/app
  outbox migrate --layout=log --shards 4                      # a log of 4 shards (PostgreSQL)
  outbox migrate --layout=log --drop-log-cursor relay         # a cursor no relay reads`,
	flags: func(fs *flag.FlagSet) any {
		o := &migrateOpts{}
		fs.StringVar(&o.layout, "layout", layoutFromStore, layoutUsage+"; left out, the log layout for a new outbox (PostgreSQL, SQLite), and for an existing one what it has, the log too when it has one")
		fs.IntVar(&o.shards, "shards", 0, "with --layout=log on PostgreSQL: the shards a new log is made with, 1 to 256 (default 1; an existing log keeps its own)")
		fs.Var(&o.dropLogCursors, "drop-log-cursor", "with --layout=log: then drop this cursor of the log, which no relay reads any more (repeatable)")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*migrateOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		d, err := parseDSN(c.dsn)
		if err != nil {
			return err
		}
		o.layout = logImplied(o.layout, c.set["shards"] || len(o.dropLogCursors) > 0)
		if err := checkLayout(o.layout, d); err != nil {
			return err
		}
		if c.set["shards"] {
			switch {
			case o.layout != layoutLog:
				return usagef("--shards is the event log's: give it with --layout=log")
			case o.shards < 1 || o.shards > 256:
				return usagef("--shards must be from 1 to 256, got %d", o.shards)
			}
		}
		if len(o.dropLogCursors) > 0 && o.layout != layoutLog {
			return usagef("--drop-log-cursor is the event log's: give it with --layout=log")
		}
		if slices.Contains(o.dropLogCursors, "") {
			return usagef("--drop-log-cursor: a cursor's name must not be empty")
		}
		s, err := d.open(ctx, true, c.timeout)
		if err != nil {
			return err
		}
		defer s.close()
		newOutbox := false
		if o.layout == layoutFromStore && d.my == nil {
			// A new outbox is made on the log layout; an existing one keeps its layout.
			lookCtx, cancel := context.WithTimeout(ctx, c.timeout)
			has, err := hasOutbox(lookCtx, d, s)
			cancel()
			if err != nil {
				return timedOut(fmt.Errorf("look for the outbox: %w", err), c.timeout)
			}
			if newOutbox = !has; newOutbox {
				o.layout = layoutLog
				// Checked before anything is applied: a log that cannot be made leaves
				// no events table made without it.
				if err := checkLayout(o.layout, d); err != nil {
					return usagef("a new outbox is made on the log layout: %v, or give --layout=table for the events table alone", err)
				}
			}
		}
		if o.layout, err = resolveLayout(ctx, o.layout, d, s, c.timeout, true); err != nil {
			return err
		}
		var lm *logMigration
		if o.layout == layoutLog {
			// Checked before anything is applied: a refused --shards changes nothing.
			if lm, err = planLogMigration(ctx, d, s, o.shards, c.set["shards"], c.timeout); err != nil {
				return err
			}
		}
		applied, err := s.migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Fprintf(env.Stdout, "%s is up to date\n", d.describe())
		} else {
			vs := make([]string, len(applied))
			for i, v := range applied {
				vs[i] = strconv.Itoa(v)
			}
			fmt.Fprintf(env.Stdout, "%s: applied migration %s\n", d.describe(), strings.Join(vs, ", "))
		}
		if lm == nil {
			return nil
		}
		if err := lm.apply(ctx, env); err != nil {
			return err
		}
		if newOutbox {
			fmt.Fprintf(env.Stdout, "%s: a new outbox, made on the log layout (--layout=table makes the events table alone)\n", d.describe())
		}
		if len(o.dropLogCursors) == 0 {
			return nil
		}
		l, err := openLog(ctx, d, s, c.timeout)
		if err != nil {
			return err
		}
		defer l.close()
		for _, name := range o.dropLogCursors {
			if err := l.dropCursor(ctx, name, c.timeout); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "%s: dropped the log cursor %s\n", d.describe(), name)
		}
		return nil
	},
}

// dropCursor drops a cursor of the log (Log.DropCursor), saying why it could not.
func (l *eventLog) dropCursor(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	var notFound, busy bool
	if l.lite != nil {
		err = l.lite.DropCursor(ctx, name)
		notFound, busy = errors.Is(err, sqlite.ErrLogCursorNotFound), errors.Is(err, sqlite.ErrLogCursorBusy)
	} else {
		err = l.pg.DropCursor(ctx, name)
		notFound, busy = errors.Is(err, postgres.ErrLogCursorNotFound), errors.Is(err, postgres.ErrLogCursorBusy)
	}
	switch {
	case notFound:
		return fmt.Errorf("--drop-log-cursor %s: the log has no cursor %s", name, name)
	case busy:
		return fmt.Errorf("--drop-log-cursor %s: a log relay is delivering from it; stop the relays of --log-cursor %s first", name, name)
	}
	return timedOut(err, timeout)
}
