package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// The migrate command.
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
  outbox migrate --dsn 'postgres://…/app?schema=events&table=outbox'
  outbox migrate --dsn 'mysql://app@127.0.0.1:3306/app'       # or app@tcp(127.0.0.1:3306)/app`,
	run: func(ctx context.Context, env *Env, c *call) error {
		if err := noArgs(c); err != nil {
			return err
		}
		d, err := parseDSN(c.dsn)
		if err != nil {
			return err
		}
		s, err := d.open(ctx, true, c.timeout)
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
