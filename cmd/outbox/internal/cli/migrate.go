package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
)

type migrateOpts struct {
	layout string
	shards int
}

// The migrate command.
var migrateCmd = &command{
	name: "migrate", args: "[--dsn DSN] [--layout=log [--shards N]]", needsDSN: true,
	summary: "Create or upgrade the outbox schema (embedded, versioned migrations).",
	help: `
Safe to run on an up-to-date store: it applies only what is missing. Every other
command refuses a store that is not migrated; migrate is also the only command that
creates a SQLite file.

--layout=log (PostgreSQL and SQLite; experimental) also creates the event log beside
the events table, or brings it up to date. On PostgreSQL the log is made with --shards
shards (1 by default) and keeps them: a count that differs from an existing log's is
refused, and without --shards an existing log keeps its own. The log's table is
outbox_log in the DSN's schema, or <table>_log when the DSN names table=. Then run
relays with --layout=log, and move writers to the log when ready; the relays keep
delivering what the events table holds (docs/log-layout.md#moving-onto-the-log-layout).

Examples:
  outbox migrate --dsn sqlite:./app.db
  OUTBOX_DSN='postgres://postgres@127.0.0.1:5432/app?sslmode=disable' outbox migrate
  outbox migrate --dsn 'postgres://…/app?schema=events&table=outbox'
  outbox migrate --dsn 'mysql://app@127.0.0.1:3306/app'       # or app@tcp(127.0.0.1:3306)/app
  outbox migrate --layout=log --shards 4                      # the event log too (PostgreSQL)`,
	flags: func(fs *flag.FlagSet) any {
		o := &migrateOpts{}
		layoutFlag(fs, &o.layout)
		fs.IntVar(&o.shards, "shards", 0, "with --layout=log on PostgreSQL: the shards a new log is made with, 1 to 256 (default 1; an existing log keeps its own)")
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
		s, err := d.open(ctx, true, c.timeout)
		if err != nil {
			return err
		}
		defer s.close()
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
		if lm != nil {
			return lm.apply(ctx, env)
		}
		return nil
	},
}
