// Package fitiqcli is the logic of the fitiq command, kept out of main so that tests
// run it in-process: Run takes the arguments and the writers and returns an exit code.
package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/sqlite"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and something is wrong (a sync left events behind, a check failed)
	exitUsage = 2 // bad flags or arguments: nothing was done
)

type command struct {
	name, summary, usage string
	run                  func(ctx context.Context, args []string, out, errOut io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"log", "save an entry locally, with its outbox event, in one transaction", logUsage, runLog},
		{"status", "the outbox statistics and the local entries' sync state", statusUsage, runStatus},
		{"sync", "deliver pending events to the remote API", syncUsage, runSync},
		{"history", "entries as the remote API holds them (or, with --local, as this device does)", historyUsage, runHistory},
		{"backend", "serve the remote API", backendUsage, runBackend},
		{"demo", "the whole seed end to end: API, faulty network, client, check", demoUsage, runDemo},
	}
}

const mainUsage = `fitiq — the FitIQ health tracker, syncing through a transactional outbox

Usage:
  fitiq <command> [flags] [arguments]

Commands:
%s
Run "fitiq <command> --help" for a command's flags and examples.

Examples:
  fitiq demo                                  # everything, end to end, in a temporary directory
  fitiq backend --issue me &                  # serve the API; prints a token for user "me"
  export FITIQ_TOKEN=<that token>
  fitiq log weight 72.5                       # saved locally, event pending
  fitiq sync                                  # delivered; the entry gets its backend ID
  fitiq status
  fitiq history --type weight --from 2025-01-01

Client settings come from flags or the environment:
  --db     FITIQ_DB       local SQLite file (default fitiq.db)
  --user   FITIQ_USER     the user ID (default me)
  --api    FITIQ_API_URL  the remote API (default http://127.0.0.1:8080)
  --token  FITIQ_TOKEN    the user's bearer token
`

// Run runs the fitiq command line (args without the program name) and returns its exit code.
func Run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 {
		printMainUsage(errOut)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c, ok := lookup(args[1]); ok {
				fmt.Fprint(out, c.usage)
				return exitOK
			}
		}
		printMainUsage(out)
		return exitOK
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(errOut, "fitiq: unknown command %q\n\n", name)
		printMainUsage(errOut)
		return exitUsage
	}
	return c.run(ctx, args[1:], out, errOut)
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func printMainUsage(w io.Writer) {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, b.String())
}

// parse parses flags that may come before, after or between positional arguments,
// and returns the positional ones. --help prints usage to out; ok false means return code.
func parse(fs *flag.FlagSet, usage string, args []string, out, errOut io.Writer) (positional []string, code int, ok bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usage)
			return nil, exitOK, false
		}
		if err != nil {
			fmt.Fprintf(errOut, "fitiq %s: %v\nRun \"fitiq %s --help\" for usage.\n", fs.Name(), err, fs.Name())
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, exitOK, true
		}
		if rest[0] == "--" {
			return append(positional, rest[1:]...), exitOK, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func usageError(errOut io.Writer, cmd, format string, args ...any) int {
	fmt.Fprintf(errOut, "fitiq %s: %s\nRun \"fitiq %s --help\" for usage.\n", cmd, fmt.Sprintf(format, args...), cmd)
	return exitUsage
}

func failed(errOut io.Writer, cmd string, err error) int {
	fmt.Fprintf(errOut, "fitiq %s: %v\n", cmd, err)
	return exitFail
}

// clientFlags are the settings every client command shares.
type clientFlags struct {
	db, user, api, token string
	verbose, quiet       bool
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.db, "db", cmp.Or(os.Getenv("FITIQ_DB"), "fitiq.db"), "local SQLite `file` (env FITIQ_DB)")
	fs.StringVar(&c.user, "user", cmp.Or(os.Getenv("FITIQ_USER"), "me"), "user `ID` (env FITIQ_USER)")
	fs.StringVar(&c.api, "api", cmp.Or(os.Getenv("FITIQ_API_URL"), "http://127.0.0.1:8080"), "remote API `URL` (env FITIQ_API_URL)")
	fs.StringVar(&c.token, "token", os.Getenv("FITIQ_TOKEN"), "the user's bearer `token` (env FITIQ_TOKEN)")
	fs.BoolVar(&c.verbose, "v", false, "log every step of the processor, to stderr")
	fs.BoolVar(&c.quiet, "q", false, "log nothing (by default the sync's console lines go to stderr)")
}

const clientFlagsHelp = `  --db FILE       local SQLite file (env FITIQ_DB; default fitiq.db)
  --user ID       user ID (env FITIQ_USER; default me)
  --api URL       remote API (env FITIQ_API_URL; default http://127.0.0.1:8080)
  --token TOKEN   the user's bearer token (env FITIQ_TOKEN)
  -v              log every step of the processor, to stderr
  -q              log nothing (by default the sync's console lines go to stderr)
`

// client is an opened local database and the user's app on it.
type client struct {
	app    *fitiq.App
	closer func() error
}

// open opens (creating if needed) the local database and migrates both schemas, as the
// app does on launch.
func (c *clientFlags) open(ctx context.Context, logger *slog.Logger) (*client, error) {
	db, err := sqlite.Open(c.db, sqlite.OpenConfig{})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*client, error) {
		db.Close()
		return nil, err
	}
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		return fail(err)
	}
	if _, err := fitiq.Migrate(ctx, db); err != nil {
		return fail(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: logger})
	if err != nil {
		return fail(err)
	}
	app, err := fitiq.NewApp(ctx, store, fitiq.Config{UserID: c.user, Source: "cli"})
	if err != nil {
		return fail(err)
	}
	return &client{app: app, closer: db.Close}, nil
}

func (c *clientFlags) apiClient() (*fitiq.Client, error) {
	return fitiq.NewClient(fitiq.ClientConfig{BaseURL: c.api, Token: c.token})
}

// logger writes the sync's console lines to errOut: from Info by default (each batch,
// each event processed, what was uploaded and the backend ID it got, and every
// failure), from Debug with -v, nothing with -q.
func (c *clientFlags) logger(errOut io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch {
	case c.quiet:
		return slog.New(slog.DiscardHandler)
	case c.verbose:
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
}

// durations parses "1s,5s,30s".
func durations(s string) ([]time.Duration, error) {
	var ds []time.Duration
	for part := range strings.SplitSeq(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%q is not a duration such as 500ms or 2m", part)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

func formatDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.String()
	}
	return strings.Join(parts, ", ")
}

// statsLines writes the seed's getStatistics lines.
func statsLines(w io.Writer, s outbox.Stats, indent string) {
	fmt.Fprintf(w, "%sTotal events: %d\n", indent, s.Total)
	fmt.Fprintf(w, "%sPending: %d\n", indent, s.Pending+s.Processing)
	fmt.Fprintf(w, "%sCompleted: %d\n", indent, s.Completed)
	fmt.Fprintf(w, "%sFailed: %d (%d retrying, %d given up)\n", indent, s.Failed+s.GivenUp, s.Failed, s.GivenUp)
	fmt.Fprintf(w, "%sSuccess rate: %.1f%%\n", indent, s.SuccessRate()*100)
	fmt.Fprintf(w, "%sStale events: %d\n", indent, s.Stale)
}

func asFieldError(err error, fe **fitiq.FieldError) bool { return errors.As(err, fe) }
