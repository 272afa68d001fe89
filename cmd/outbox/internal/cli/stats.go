package cli

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The stats command.
type statsOpts struct {
	user       string
	json       bool
	staleAfter time.Duration
	window     time.Duration
	layout     string
	logCursors listFlag
}

// statsJSON is Stats for scripts. Durations are seconds, as numbers, in fields named
// *_seconds; a rate is null when there is nothing to take it over (nothing settled;
// no outcome in the window), not a 100 % or 0 % that nothing measured.
type statsJSON struct {
	Total      int `json:"total"`
	Pending    int `json:"pending"`
	Processing int `json:"processing"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	GivenUp    int `json:"given_up"`
	Stale      int `json:"stale"`
	Blocked    int `json:"blocked"`
	Stuck      int `json:"stuck"`

	OldestPendingAgeSeconds float64 `json:"oldest_pending_age_seconds"`
	OldestDueAgeSeconds     float64 `json:"oldest_due_age_seconds"`
	// SuccessRate is completed ÷ (completed + retrying + given up).
	SuccessRate *float64 `json:"success_rate"`

	// Recent counts the outcomes of the last RecentWindowSeconds; RecentFailureRate is
	// their share of failures (retrying or given up).
	Recent              recentJSON `json:"recent"`
	RecentWindowSeconds float64    `json:"recent_window_seconds"`
	RecentFailureRate   *float64   `json:"recent_failure_rate"`

	ByType map[string]outbox.TypeCounts `json:"by_type,omitempty"`
	Paused []string                     `json:"paused,omitempty"`

	// Log is what waits on the event log (--layout=log), which the counts above do not
	// include; absent on the table layout.
	Log *logJSON `json:"log,omitempty"`
}

// logJSON is what waits on the event log for the log relays of the cursors asked
// about: the committed events each cursor has not passed and the oldest one's age (0
// when none waits, as the table's ages), and, at the top, their sum and the oldest;
// and how many events the log's relays delivered in the window
// (recent_window_seconds), which recent.completed includes.
type logJSON struct {
	EventsWaiting           int64           `json:"events_waiting"`
	OldestWaitingAgeSeconds float64         `json:"oldest_waiting_age_seconds"`
	DeliveredInWindow       int64           `json:"delivered_in_window"`
	Cursors                 []logCursorJSON `json:"cursors"`
}

type logCursorJSON struct {
	Cursor                  string  `json:"cursor"`
	EventsWaiting           int64   `json:"events_waiting"`
	OldestWaitingAgeSeconds float64 `json:"oldest_waiting_age_seconds"`
}

// withLog adds what waits on the log, when there is a log.
func (s statsJSON) withLog(w *onLog) statsJSON {
	if w != nil {
		s.Log = &logJSON{EventsWaiting: w.events, OldestWaitingAgeSeconds: w.oldestAge.Seconds(), DeliveredInWindow: w.delivered,
			Cursors: []logCursorJSON{}}
		for _, c := range w.cursors {
			s.Log.Cursors = append(s.Log.Cursors, logCursorJSON{Cursor: c.name, EventsWaiting: c.events, OldestWaitingAgeSeconds: c.oldestAge.Seconds()})
		}
	}
	return s
}

// withLogDeliveries adds what the log delivered in the window to the window's
// completed events: a delivery from the log leaves no row in the events table, whose
// window counts only the log's failures (moved there), so without them one failure
// among thousands of log deliveries would read as a failure rate of 100 %.
func withLogDeliveries(st outbox.Stats, w *onLog) outbox.Stats {
	if w != nil {
		st.Recent.Completed += int(w.delivered)
	}
	return st
}

// logPerUser refuses --user on the log layout: the log is not kept by user, so what
// waits on it is every user's.
func logPerUser(layout, user string) error {
	if layout == layoutLog && user != "" {
		return usagef("--user with --layout=log: the event log is not kept by user, so what waits on it is every user's " +
			"(leave out --layout=log to see one user's events in the events table)")
	}
	return nil
}

// waitingOnLog reads what waits on l for each cursor at now, and what the log
// delivered in the window before, under the command's timeout; nil without a log (the
// table layout).
func waitingOnLog(ctx context.Context, c *call, l *eventLog, cursors []string, now time.Time, window time.Duration) (*onLog, error) {
	if l == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	w, err := l.waitingAt(ctx, cursors, now, window)
	if err != nil {
		return nil, err
	}
	return &w, nil
}

type recentJSON struct {
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	GivenUp   int `json:"given_up"`
}

func newStatsJSON(s outbox.Stats) statsJSON {
	return statsJSON{
		Total: s.Total, Pending: s.Pending, Processing: s.Processing, Completed: s.Completed, Failed: s.Failed,
		GivenUp: s.GivenUp, Stale: s.Stale, Blocked: s.Blocked, Stuck: s.Stuck,
		OldestPendingAgeSeconds: s.OldestPendingAge.Seconds(), OldestDueAgeSeconds: s.OldestDueAge.Seconds(),
		SuccessRate:         successRate(s),
		Recent:              recentJSON{Completed: s.Recent.Completed, Failed: s.Recent.Failed, GivenUp: s.Recent.GivenUp},
		RecentWindowSeconds: s.Recent.Window.Seconds(),
		RecentFailureRate:   recentFailureRate(s.Recent),
		ByType:              s.ByType, Paused: s.Paused,
	}
}

// successRate is Stats.SuccessRate, or nil when no event is settled.
func successRate(s outbox.Stats) *float64 {
	if s.Completed+s.Failed+s.GivenUp == 0 {
		return nil
	}
	r := s.SuccessRate()
	return &r
}

// recentFailureRate is the window's failure rate, or nil when it holds no outcome.
func recentFailureRate(w outbox.WindowCounts) *float64 {
	if w.Completed+w.Failed+w.GivenUp == 0 {
		return nil
	}
	r := w.FailureRate()
	return &r
}

// percent prints a rate for people: "n/a" when there is none.
func percent(r *float64) string {
	if r == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", *r*100)
}

var statsCmd = &command{
	name: "stats", args: "[--user ID] [--json]", needsDSN: true,
	summary: "Count events by status and type, overall or for one user.",
	help: `
"failed" counts events that failed and will be retried; "given up" those that will
not be retried without an operator (see 'outbox retry'). Blocked events wait behind a
given-up event of their ordering key. A rate with nothing to take it over (no event
settled yet, no outcome in the window) reads n/a. With --json, every duration is in
seconds (the fields ending in _seconds) and such a rate is null.

--layout=log (PostgreSQL and SQLite, after 'outbox migrate --layout=log') adds what
waits on the event log, which the counts of the events table do not include: the
committed events the log relay has not passed, and the oldest one's age. That is for
the relays' default cursor (relay); --log-cursor NAME, repeatable, names the cursors
of relays scoped by --type instead: a line for each, and in "log" their sum and the
oldest, with each cursor's in "cursors". A cursor counts every type it has not passed,
its scope's and the others it will pass by. It also adds the events the log's relays
delivered within --window (counted by whole minutes, every cursor's) to the window's
completed: a delivery from the log leaves no row in the events table, where only the
log's failures go. With --json: "log": {"events_waiting", "oldest_waiting_age_seconds",
"delivered_in_window", "cursors"}. The log is not kept by user: --user is refused with
it.

Examples:
  outbox stats
  outbox stats --user 7f3c… --json | jq .given_up
  outbox stats --layout=log --json | jq .log.events_waiting
  outbox stats --layout=log --log-cursor orders --log-cursor invoices`,
	flags: func(fs *flag.FlagSet) any {
		o := &statsOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		durationVar(fs, &o.staleAfter, "stale-after", outbox.DefaultStaleAfter, "an event due for longer than this is stale")
		durationVar(fs, &o.window, "window", outbox.DefaultHealthWindow, "count the outcomes of this last stretch of time (recent)")
		layoutFromStoreFlag(fs, &o.layout)
		logCursorsFlag(fs, &o.logCursors)
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*statsOpts)
		if o.window <= 0 {
			return usagef("--window must be positive, got %s", o.window)
		}
		if err := noArgs(c); err != nil {
			return err
		}
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		o.layout = logImplied(o.layout, len(o.logCursors) > 0)
		if err := logPerUser(o.layout, o.user); err != nil {
			return err
		}
		cursors, err := checkLogCursors(o.layout, o.logCursors)
		if err != nil {
			return err
		}
		return withStoreAndLog(ctx, c, o.layout, o.user == "", func(s outbox.Store, l *eventLog) error {
			now := env.Clock.Now()
			st, err := s.Stats(ctx, outbox.StatsQuery{UserID: o.user, Now: now, StaleAfter: o.staleAfter, Window: o.window})
			if err != nil {
				return err
			}
			w, err := waitingOnLog(ctx, c, l, cursors, now, o.window)
			if err != nil {
				return err
			}
			st = withLogDeliveries(st, w)
			if o.json {
				return writeJSON(env.Stdout, newStatsJSON(st).withLog(w))
			}
			printStats(env, st, w)
			return nil
		})
	},
}

// ofCursor names a cursor other than the CLI's default after "the log relay".
func ofCursor(name string) string {
	if name == postgres.DefaultLogRelayCursor {
		return ""
	}
	return " of cursor " + name
}

func printStats(env *Env, st outbox.Stats, lw *onLog) {
	t := newTable(env.Stdout, "STATUS", "EVENTS")
	t.row("pending", strconv.Itoa(st.Pending))
	t.row("processing", strconv.Itoa(st.Processing))
	t.row("failed (retrying)", strconv.Itoa(st.Failed))
	t.row("given up", strconv.Itoa(st.GivenUp))
	t.row("completed", strconv.Itoa(st.Completed))
	t.row("total", strconv.Itoa(st.Total))
	t.flush()
	fmt.Fprintf(env.Stdout, "\nsuccess rate %s · stale %d · stuck %d · blocked %d · oldest waiting %s · oldest due %s\n",
		percent(successRate(st)), st.Stale, st.Stuck, st.Blocked, fmtAge(st.OldestPendingAge), fmtAge(st.OldestDueAge))
	if w := st.Recent; w.Window > 0 {
		fmt.Fprintf(env.Stdout, "last %s: %d completed · %d failed (retrying) · %d given up · failure rate %s\n",
			formatDuration(w.Window), w.Completed, w.Failed, w.GivenUp, percent(recentFailureRate(w)))
	}
	if lw != nil {
		for _, c := range lw.cursors {
			fmt.Fprintf(env.Stdout, "on the log (not counted above): %d waiting for the log relay%s · oldest waiting %s\n",
				c.events, ofCursor(c.name), fmtAge(c.oldestAge))
		}
		fmt.Fprintf(env.Stdout, "on the log: %d delivered in the last %s (in the completed above)\n",
			lw.delivered, formatDuration(lw.window))
	}
	if len(st.Paused) > 0 {
		fmt.Fprintf(env.Stdout, "paused: %s (%d waiting; see 'outbox pause')\n", strings.Join(st.Paused, ", "), st.PausedWaiting())
	}
	if len(st.ByType) == 0 {
		return
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "TYPE", "PENDING", "PROCESSING", "FAILED", "GIVEN UP", "COMPLETED")
	for _, typ := range slices.Sorted(maps.Keys(st.ByType)) {
		tc := st.ByType[typ]
		t.row(typ, strconv.Itoa(tc.Pending), strconv.Itoa(tc.Processing), strconv.Itoa(tc.Failed), strconv.Itoa(tc.GivenUp), strconv.Itoa(tc.Completed))
	}
	t.flush()
}

// The stale command.
type staleOpts struct {
	user       string
	staleAfter time.Duration
	limit      int
	json       bool
}

var staleCmd = &command{
	name: "stale", args: "[--stale-after 5m] [--user ID] [--json]", needsDSN: true,
	summary: "List events due for longer than the stale threshold, and stuck ones.",
	help: `
A stale event is pending, or failed and due for retry, for longer than --stale-after:
no relay is delivering it. A stuck event is held in processing under a lease that has
expired: the relay that claimed it is gone, and no relay has taken it over. Both are
listed (stale first); check that a relay runs ('outbox health'). With --json the
output is {"stale": [...], "stuck": [...]}.

Examples:
  outbox stale
  outbox stale --stale-after 1h --json`,
	flags: func(fs *flag.FlagSet) any {
		o := &staleOpts{}
		fs.StringVar(&o.user, "user", "", "only this user's events")
		durationVar(fs, &o.staleAfter, "stale-after", 5*time.Minute, "an event due for longer than this is stale")
		fs.IntVar(&o.limit, "limit", 50, "at most this many events")
		fs.BoolVar(&o.json, "json", false, "print JSON")
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*staleOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		if o.limit <= 0 {
			return usagef("--limit must be positive, got %d", o.limit)
		}
		if _, err := parseDSN(c.dsn); err != nil {
			return err
		}
		return withStore(ctx, c, func(s outbox.Store) error {
			now := env.Clock.Now()
			stale, err := s.List(ctx, outbox.Filter{UserID: o.user, DueBefore: now.Add(-o.staleAfter), Limit: o.limit})
			if err != nil {
				return err
			}
			stuck, err := s.List(ctx, outbox.Filter{UserID: o.user, StuckAt: now, Limit: o.limit})
			if err != nil {
				return err
			}
			if o.json {
				conv := func(evs []outbox.Event) []eventJSON {
					out := make([]eventJSON, len(evs))
					for i, e := range evs {
						out[i] = toJSON(e)
					}
					return out
				}
				return writeJSON(env.Stdout, map[string][]eventJSON{"stale": conv(stale), "stuck": conv(stuck)})
			}
			if err := printEvents(env, stale, false, fmt.Sprintf("no stale events (none due for longer than %s)", formatDuration(o.staleAfter))); err != nil {
				return err
			}
			if len(stuck) > 0 {
				fmt.Fprintf(env.Stdout, "\n%d stuck (processing under an expired lease):\n", len(stuck))
				return printEvents(env, stuck, false, "")
			}
			fmt.Fprintln(env.Stdout, "no stuck events")
			return nil
		})
	},
}
