// Package cli is the outbox command: the relay daemon and the operator's commands. It
// writes to the io.Writers it is given and returns an exit code, so that cmd/outbox is
// a thin main and every command is tested end to end.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/fitiq/outbox"
)

// Exit codes.
const (
	ExitOK = 0
	// ExitFailure: the command ran and failed (a store error, an event not found), or
	// health found alerts.
	ExitFailure = 1
	// ExitUsage: bad input (a flag, a DSN, a sink URL); nothing was done. For health:
	// the state could not be determined.
	ExitUsage = 2
)

// Env is what a command sees of the world.
type Env struct {
	Stdout, Stderr io.Writer
	// Stdin is what enqueue reads events or a payload from. Defaults to os.Stdin.
	Stdin io.Reader
	// Getenv reads environment variables (OUTBOX_DSN, OUTBOX_SINK_TOKEN). Defaults to os.Getenv.
	Getenv func(string) string
	// StderrIsTerminal makes progress bars redraw in place; otherwise they print a line
	// per step.
	StderrIsTerminal bool
	// Clock supplies "now" for stats, staleness and purges. Defaults to outbox.SystemClock.
	Clock outbox.Clock

	// Test hooks.
	observer  outbox.Observer                 // also told about the relay's deliveries
	onListen  func(addr string)               // called with the metrics server's address once it listens
	onStart   func()                          // called once the relay's processor runs
	buildInfo func() (*debug.BuildInfo, bool) // defaults to debug.ReadBuildInfo
	onSummary func()                          // called after each of the relay's summary lines
	// Called on the log relay's goroutine before its Run, and after the signal's stop of
	// the log relay returned: to order the two as a signal right after the start can.
	beforeLogRun, afterLogStop func()
}

// usageError is bad input: exit 2, one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError carries a specific exit code with its message (health's 1 and 2). An empty
// message prints nothing more.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

type command struct {
	name     string
	args     string // synopsis after the name
	summary  string
	help     string // longer text with examples
	flags    func(fs *flag.FlagSet) any
	run      func(ctx context.Context, env *Env, c *call) error
	needsDSN bool
}

// call is one invocation: parsed flags and positional arguments.
type call struct {
	cmd     *command
	opts    any
	args    []string
	dsn     string
	timeout time.Duration   // --timeout: connecting, and each statement of an operator command
	set     map[string]bool // the flags given on the command line, by name
}

// globals are the flags that may come before the command: outbox --dsn X --timeout 2s stats.
// A command's own --dsn or --timeout wins over them.
type globals struct {
	dsn     string
	timeout time.Duration // zero: not given
}

// DefaultTimeout is how long a command waits for the store to connect, and for each
// statement, before it gives up with exit 2 ("cannot tell").
const DefaultTimeout = 10 * time.Second

var commands []*command

func init() {
	commands = []*command{
		migrateCmd, relayCmd, enqueueCmd, statsCmd, lsCmd, showCmd, retryCmd, discardCmd, purgeCmd, staleCmd, healthCmd,
		pauseCmd, resumeCmd, serveCmd, versionCmd,
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Main runs the command named by args[0] and returns the process's exit code. ctx ends
// on SIGINT/SIGTERM: the relay then drains and exits; other commands stop.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Clock == nil {
		env.Clock = outbox.SystemClock
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.buildInfo == nil {
		env.buildInfo = debug.ReadBuildInfo
	}
	// Global flags may come before the command: outbox --dsn X --timeout 2s stats.
	var g globals
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		a := args[0]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "h", "help":
			topUsage(env.Stdout)
			return ExitOK
		case "version":
			fmt.Fprintln(env.Stdout, versionLine(env.buildInfo()))
			return ExitOK
		case "dsn", "timeout":
			if hasValue {
				args = args[1:]
			} else {
				if len(args) < 2 {
					return fail(&env, "", usagef("flag needs an argument: --%s", name))
				}
				value, args = args[1], args[2:]
			}
			if name == "dsn" {
				g.dsn = value
				continue
			}
			d, err := parseDuration(value)
			if err != nil {
				return fail(&env, "", usagef("--timeout: %v", err))
			}
			if d <= 0 {
				return fail(&env, "", usagef("--timeout must be positive, got %s", d))
			}
			g.timeout = d
		case "":
			return fail(&env, "", usagef("unknown flag %s before the command (see 'outbox --help')", a))
		default:
			if slices.Contains(commandFlagNames(), name) {
				return fail(&env, "", usagef("--%s is a command's flag: give it after the command, as in 'outbox COMMAND --%s' "+
					"(only --dsn, --timeout, --version and --help go before the command)", name, name))
			}
			return fail(&env, "", usagef("unknown flag %s before the command%s (only --dsn, --timeout, --version and --help go there; "+
				"see 'outbox --help')", a, didYouMean(name, "--", globalFlagNames, commandFlagNames())))
		}
	}
	if len(args) == 0 {
		topUsage(env.Stderr)
		return ExitUsage
	}
	if args[0] == "help" {
		if len(args) > 1 && lookup(args[1]) != nil {
			commandUsage(env.Stdout, lookup(args[1]), nil)
			return ExitOK
		}
		topUsage(env.Stdout)
		return ExitOK
	}
	cmd := lookup(args[0])
	if cmd == nil {
		return fail(&env, "", usagef("unknown command %q%s (want one of %s; see 'outbox --help')", args[0], didYouMean(args[0], "", names()), strings.Join(names(), ", ")))
	}
	c, err := parse(cmd, args[1:], g, &env)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return fail(&env, cmd.name, err)
	}
	return fail(&env, cmd.name, cmd.run(ctx, &env, c))
}

func names() []string {
	var ns []string
	for _, c := range commands {
		ns = append(ns, c.name)
	}
	return ns
}

// globalFlagNames are the flags that may come before the command.
var globalFlagNames = []string{"dsn", "timeout", "version", "help"}

// commandFlagNames lists the flags of every command, for suggestions.
func commandFlagNames() []string {
	var all []string
	for _, c := range commands {
		fs := c.flagSet(&call{cmd: c}, new(string))
		fs.VisitAll(func(f *flag.Flag) { all = append(all, f.Name) })
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// didYouMean returns "; did you mean X?" naming the candidate nearest to the mistyped
// name, or "" when none is near: within an edit or two (a swap of neighbours is one),
// or a prefix of three letters or more. The lists are tried in order: a near name in
// an earlier one wins; among equally near ones, one with the same first letter.
func didYouMean(typed, prefix string, lists ...[]string) string {
	for _, list := range lists {
		best, bestScore := "", 0
		for _, c := range list {
			d := editDistance(typed, c)
			if len(typed) >= 3 && (strings.HasPrefix(c, typed) || strings.HasPrefix(typed, c)) {
				d = min(d, 1)
			}
			if d > max(1, min(2, len(c)/3)) {
				continue
			}
			score := 2 * d
			if typed == "" || c[0] != typed[0] {
				score++
			}
			if best == "" || score < bestScore {
				best, bestScore = c, score
			}
		}
		if best != "" {
			return "; did you mean " + prefix + best + "?"
		}
	}
	return ""
}

// editDistance is the optimal-string-alignment distance between a and b, in bytes:
// insertions, deletions, substitutions and swaps of neighbours count one each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// fail prints err as one line and returns its exit code.
func fail(env *Env, cmd string, err error) int {
	if err == nil {
		return ExitOK
	}
	prefix := "outbox: "
	if cmd != "" {
		prefix = "outbox " + cmd + ": "
	}
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(env.Stderr, prefix+oneLine(ue.msg))
		return ExitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(env.Stderr, prefix+oneLine(ee.msg))
		}
		return ee.code
	default:
		fmt.Fprintln(env.Stderr, prefix+oneLine(err.Error()))
		return ExitFailure
	}
}

// oneLine joins the lines of a message into one, each line once: pgx lists every
// connection attempt on a line of its own, and two attempts (TLS, then plain) that
// failed alike would say the same thing twice.
func oneLine(s string) string {
	var out strings.Builder
	var seen []string
	for line := range strings.Lines(s) {
		line = strings.Join(strings.Fields(line), " ")
		if line == "" || slices.Contains(seen, line) {
			continue
		}
		if len(seen) > 0 {
			if prev := seen[len(seen)-1]; strings.HasSuffix(prev, ":") {
				out.WriteString(" ")
			} else {
				out.WriteString("; ")
			}
		}
		seen = append(seen, line)
		out.WriteString(line)
	}
	return out.String()
}

// dsnUsage describes --dsn wherever it is listed.
const dsnUsage = "the store: sqlite:PATH, postgres://… or mysql://… (default $OUTBOX_DSN)"

// flagSet is the command's flags, set into c (and dsn).
func (cmd *command) flagSet(c *call, dsn *string) *flag.FlagSet {
	fs := flag.NewFlagSet("outbox "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported as one line by fail
	if cmd.needsDSN {
		fs.StringVar(dsn, "dsn", "", dsnUsage)
		timeoutFlag(fs, &c.timeout)
	}
	if cmd.flags != nil {
		c.opts = cmd.flags(fs)
	}
	return fs
}

// undefinedFlag is how the flag package names a flag it does not know.
const undefinedFlag = "flag provided but not defined: -"

// parse reads flags and positional arguments in any order (flags may follow IDs).
func parse(cmd *command, args []string, g globals, env *Env) (*call, error) {
	c := &call{cmd: cmd}
	var dsn string
	fs := cmd.flagSet(c, &dsn)
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(env.Stdout, cmd, fs)
			return nil, err
		}
		if err != nil {
			hint := ""
			if name, ok := strings.CutPrefix(err.Error(), undefinedFlag); ok {
				var own []string
				fs.VisitAll(func(f *flag.Flag) { own = append(own, f.Name) })
				hint = didYouMean(name, "--", own)
			}
			return nil, usagef("%v%s (see 'outbox %s --help')", err, hint, cmd.name)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			c.args = append(c.args, args[1:]...)
			break
		}
		c.args = append(c.args, args[0])
		args = args[1:]
	}
	c.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if !cmd.needsDSN {
		if g.dsn != "" || g.timeout != 0 {
			return nil, usagef("%s takes no --dsn or --timeout", cmd.name)
		}
		return c, nil
	}
	if !c.set["timeout"] && g.timeout != 0 {
		c.timeout = g.timeout
	}
	if c.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %s", c.timeout)
	}
	c.dsn = firstNonEmpty(dsn, g.dsn, env.Getenv("OUTBOX_DSN"))
	if c.dsn == "" {
		return nil, usagef("no store given: pass --dsn sqlite:PATH, --dsn postgres://… or --dsn mysql://…, or set OUTBOX_DSN")
	}
	return c, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `outbox: the transactional outbox's relay daemon and operator tool.

Usage:
  outbox [--dsn DSN] [--timeout DURATION] COMMAND [flags] [args]
  outbox --version

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
The store is named by one DSN, given as --dsn or OUTBOX_DSN:
  sqlite:PATH                                    a SQLite file
  postgres://user@host:5432/db?sslmode=disable   PostgreSQL (add schema=NAME, table=NAME to
                                                 use a non-default outbox table)
  mysql://user:pass@host:3306/db                 MySQL or MariaDB (add table=NAME); the Go
                                                 driver's user:pass@tcp(host:3306)/db works too

Exit codes: 0 done; 1 failed (or, for health, alerts); 2 bad input, or cannot tell (for
health; and for any command whose store did not answer within --timeout, default 10s).
Run 'outbox COMMAND --help' for a command's flags and examples.
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: outbox %s %s\n\n%s\n", c.name, c.args, c.summary)
	if fs == nil {
		fs = c.flagSet(&call{cmd: c}, new(string))
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		slices.SortFunc(flags, func(a, b *flag.Flag) int { return strings.Compare(a.Name, b.Name) })
		for _, f := range flags {
			name, usage := flag.UnquoteUsage(f)
			switch f.Value.(type) {
			case durationFlag, requiredDuration:
				name = "duration"
			case *listFlag:
				name = "string"
			}
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, "%-32s %s\n", line, usage)
		}
	}
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	}
}

// newLogger writes the relay's log lines to stderr.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// durationFlag is a time.Duration flag that also takes days ("7d").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return formatDuration(*f.d)
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func durationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var(durationFlag{p}, name, usage)
}

func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		if _, err := fmt.Sscanf(days, "%g", &n); err != nil || fmt.Sprint(n) != strings.TrimLeft(days, "+") || math.IsNaN(n) {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		// A time.Duration holds about 292 years; beyond that the conversion would wrap.
		if d := n * float64(24*time.Hour); d >= math.MaxInt64 || d <= math.MinInt64 {
			return 0, fmt.Errorf("invalid duration %q: longer than %dd", s, math.MaxInt64/int64(24*time.Hour))
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 90s, 15m, 2h, 7d)", s)
	}
	return d, nil
}

func formatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String() // "1h0m0s" → "1h", "2m0s" → "2m"
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ", ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// withStore parses the DSN (bad input: exit 2, nothing opened), opens the store, and
// runs fn with it.
func withStore(ctx context.Context, c *call, fn func(s outbox.Store) error) error {
	return withStoreAndLog(ctx, c, layoutTable, false, func(s outbox.Store, _ *eventLog) error { return fn(s) })
}

func timeoutFlag(fs *flag.FlagSet, p *time.Duration) {
	durationVar(fs, p, "timeout", DefaultTimeout, "give up (exit 2, cannot tell) when the store does not connect, or a statement does not answer, within this")
}

func noArgs(c *call) error {
	if len(c.args) > 0 {
		return usagef("unexpected argument %q (see 'outbox %s --help')", c.args[0], c.cmd.name)
	}
	return nil
}

// formatDurations writes a list of durations as the --retry-delays flag reads it.
func formatDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = formatDuration(d)
	}
	return strings.Join(parts, ",")
}
