package cli

// What a newcomer and an operator meet first: the version, flags in either place,
// suggestions for a mistyped flag, messages that say each thing once and name the
// real cause, rates that are not made up, and a relay that says what it does.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	built := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Path:      "github.com/fitiq/outbox/cmd/outbox",
		Main:      debug.Module{Path: "github.com/fitiq/outbox", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "21838b1d8e0f1c2a3b4c5d6e7f8091a2b3c4d5e6"},
			{Key: "vcs.time", Value: "2026-05-06T07:08:09Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	env := Env{buildInfo: func() (*debug.BuildInfo, bool) { return built, true }}
	want := "outbox v1.4.0 (github.com/fitiq/outbox, revision 21838b1d8e0f1c2a3b4c5d6e7f8091a2b3c4d5e6, 2026-05-06T07:08:09Z, modified, go1.26.0)\n"
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		if r := runEnv(t, env, args...); r.code != ExitOK || r.stdout != want || r.stderr != "" {
			t.Errorf("%v: %v\nwant %q", args, r, want)
		}
	}

	// A build without VCS stamping (go build -buildvcs=false, go install module@version).
	bare := &debug.BuildInfo{GoVersion: "go1.26.0", Path: "github.com/fitiq/outbox/cmd/outbox", Main: debug.Module{Path: "github.com/fitiq/outbox", Version: "(devel)"}}
	env.buildInfo = func() (*debug.BuildInfo, bool) { return bare, true }
	if r := runEnv(t, env, "version"); r.stdout != "outbox (devel) (github.com/fitiq/outbox, no VCS revision recorded, go1.26.0)\n" {
		t.Errorf("version without VCS information: %v", r)
	}
	env.buildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	if r := runEnv(t, env, "version"); r.code != ExitOK || !strings.HasPrefix(r.stdout, "outbox (unknown version") {
		t.Errorf("version without build information: %v", r)
	}

	// The real build information of this test binary.
	if r := runEnv(t, Env{}, "--version"); r.code != ExitOK || !strings.HasPrefix(r.stdout, "outbox ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("--version: %v", r)
	}
	if r := runEnv(t, Env{}, "version", "extra"); r.code != ExitUsage {
		t.Errorf("version with an argument: %v", r)
	}
	if r := runEnv(t, Env{}, "--help"); !strings.Contains(r.stdout, "--version") || !strings.Contains(r.stdout, "version ") {
		t.Errorf("--help does not mention the version:\n%s", r.stdout)
	}
}

func TestGlobalFlagsBeforeTheCommand(t *testing.T) {
	t.Parallel()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "outbox.db")
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn); r.code != ExitOK {
		t.Fatal(r)
	}
	for _, args := range [][]string{
		{"--timeout", "2s", "stats", "--dsn", dsn},
		{"--timeout=2s", "--dsn", dsn, "stats"},
		{"-dsn=" + dsn, "-timeout", "1m", "stats", "--json"},
		{"--dsn", dsn, "stats", "--timeout", "3s"},
	} {
		if r := runEnv(t, Env{}, args...); r.code != ExitOK || r.stderr != "" {
			t.Errorf("%v: %v", args, r)
		}
	}

	// Which --timeout applies shows in the message of a store that never answers: the
	// command's own wins over the one before it.
	never := neverAnswering(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "300ms", "stats", "--dsn", never}, "within 300ms"},
		{[]string{"--timeout", "1h", "stats", "--dsn", never, "--timeout", "200ms"}, "within 200ms"},
	} {
		r := runEnv(t, Env{}, tc.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "cannot tell") || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %v\nwant exit 2 saying it waited %s", tc.args, r, tc.want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "0s", "stats", "--dsn", dsn}, "--timeout must be positive"},
		{[]string{"--timeout", "soon", "stats", "--dsn", dsn}, `invalid duration "soon"`},
		{[]string{"--timeout"}, "flag needs an argument: --timeout"},
		{[]string{"--json", "stats", "--dsn", dsn}, "--json is a command's flag: give it after the command"},
		{[]string{"--dsn", dsn, "version"}, "version takes no --dsn or --timeout"},
	} {
		r := runEnv(t, Env{}, tc.args...)
		if r.code != ExitUsage || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %v\nwant exit 2, one line containing %q", tc.args, r, tc.want)
		}
	}
}

// neverAnswering returns a PostgreSQL DSN whose server accepts connections and never
// answers.
func neverAnswering(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return "postgres://u@" + ln.Addr().String() + "/db?sslmode=disable"
}

func TestMistypedFlagsAndCommandsGetASuggestion(t *testing.T) {
	t.Parallel()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "outbox.db")
	for _, tc := range []struct {
		args []string
		want string // "" : no suggestion
	}{
		{[]string{"relay", "--dsn", dsn, "--sinks", "http://x/"}, "flag provided but not defined: -sinks; did you mean --sink?"},
		{[]string{"stats", "--dsn", dsn, "--jsn"}, "did you mean --json?"},
		{[]string{"ls", "--dsn", dsn, "--stauts", "pending"}, "did you mean --status?"},
		{[]string{"relay", "--dsn", dsn, "--sink", "http://x/", "--batchsize", "5"}, "did you mean --batch-size?"},
		{[]string{"health", "--dsn", dsn, "--max-failure", "0.2"}, "did you mean --max-failure-rate?"},
		{[]string{"--tiemout", "2s", "stats"}, "unknown flag --tiemout before the command; did you mean --timeout?"},
		{[]string{"--dns", dsn, "stats"}, "did you mean --dsn?"},
		{[]string{"stast"}, `unknown command "stast"; did you mean stats?`},
		{[]string{"ls", "--dsn", dsn, "--colour"}, ""},
		{[]string{"frobnicate"}, ""},
	} {
		r := runEnv(t, Env{}, tc.args...)
		if r.code != ExitUsage || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: %v\nwant exit 2 and one line", tc.args, r)
			continue
		}
		if tc.want == "" && strings.Contains(r.stderr, "did you mean") {
			t.Errorf("%v: a suggestion for a name near nothing: %s", tc.args, r.stderr)
		}
		if tc.want != "" && !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %s\nwant %q", tc.args, r.stderr, tc.want)
		}
	}
}

func TestEveryStoreIsNamedInTheHelp(t *testing.T) {
	t.Parallel()
	for _, r := range []result{runEnv(t, Env{}, "--help"), runEnv(t, Env{}, "stats")} {
		out := r.stdout + r.stderr
		for _, scheme := range []string{"sqlite:", "postgres://", "mysql://"} {
			if !strings.Contains(out, scheme) {
				t.Errorf("%q does not name %s:\n%s", out, scheme, out)
			}
		}
	}
}

// A store that is not migrated is told to migrate once, on every store.
func TestNotMigratedSaysSoOnce(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, dsn string) {
		t.Helper()
		for _, cmd := range []string{"stats", "ls", "relay"} {
			args := []string{cmd, "--dsn", dsn}
			if cmd == "relay" {
				args = append(args, "--sink", "http://127.0.0.1:1/", "--once")
			}
			r := runEnv(t, Env{}, args...)
			if r.code != ExitFailure || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "is not migrated") ||
				strings.Count(r.stderr, "outbox migrate") != 1 || strings.Contains(r.stderr, ".Migrate") {
				t.Errorf("%s on an unmigrated store: %v\nwant exit 1, one line saying it once: run 'outbox migrate'", cmd, r)
			}
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "empty.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		check(t, "sqlite:"+path)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		b, ok := postgresBackend(t) // a schema of its own, never migrated
		if !ok {
			t.Skip("OUTBOX_POSTGRES_DSN is not set")
		}
		check(t, b.dsn)
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		dsn, _ := mysqlBackend(t)
		check(t, dsn)
	})
}

func TestOneLineSaysEachThingOnce(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"failed to connect to `user=u database=db`:\n\t127.0.0.1:1 (127.0.0.1): dial error: refused\n\t127.0.0.1:1 (127.0.0.1): dial error: refused": "failed to connect to `user=u database=db`: 127.0.0.1:1 (127.0.0.1): dial error: refused",
		"failed to connect:\n\t[::1]:1 (localhost): refused\n\t127.0.0.1:1 (localhost): refused":                                                     "failed to connect: [::1]:1 (localhost): refused; 127.0.0.1:1 (localhost): refused",
		"plain   message  ": "plain message",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
	// pgx tries TLS, then plain, when sslmode is not given: both fail alike.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := runEnv(t, Env{}, "stats", "--dsn", "postgres://u@"+addr+"/db")
	if r.code != ExitFailure || strings.Count(r.stderr, "connection refused") != 1 {
		t.Errorf("stats against a closed port: %v\nwant the refusal said once", r)
	}
}

func TestStatsJSONDurationsInSecondsAndNoRateOfNothing(t *testing.T) {
	t.Parallel()
	// No field holds a time.Duration (nanoseconds in JSON); a field about time is in seconds.
	typ := reflect.TypeFor[statsJSON]()
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type == reflect.TypeFor[time.Duration]() {
			t.Errorf("statsJSON.%s is a time.Duration", f.Name)
		}
		if (strings.Contains(name, "age") || strings.Contains(name, "window")) && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("statsJSON.%s is JSON %q: a time without _seconds", f.Name, name)
		}
	}
	var keys func(v any) []string
	keys = func(v any) []string {
		var out []string
		if m, ok := v.(map[string]any); ok {
			for k, sub := range m {
				out = append(out, k)
				out = append(out, keys(sub)...)
			}
		}
		return out
	}

	b := sqliteBackend(t)
	store := migrated(t, b)
	clock := outboxtest.NewClock(t0)
	env := Env{Clock: clock}

	// Nothing settled: no success rate, no failure rate.
	r := runEnv(t, env, "stats", "--dsn", b.dsn, "--json")
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("stats --json: %v\n%v", err, r)
	}
	if v, ok := raw["success_rate"]; !ok || v != nil {
		t.Errorf("success_rate with nothing settled = %v (present %v), want null", v, ok)
	}
	if v, ok := raw["recent_failure_rate"]; !ok || v != nil {
		t.Errorf("recent_failure_rate with no outcome = %v (present %v), want null", v, ok)
	}
	for _, k := range keys(raw) {
		if k == "window" || k == "oldest_pending_age" || k == "oldest_due_age" {
			t.Errorf("stats --json still has %q (nanoseconds)", k)
		}
	}
	if r := runEnv(t, env, "stats", "--dsn", b.dsn); !strings.Contains(r.stdout, "success rate n/a ·") || !strings.Contains(r.stdout, "failure rate n/a") {
		t.Errorf("stats with nothing settled:\n%s", r.stdout)
	}
	if r := runEnv(t, env, "health", "--dsn", b.dsn); r.code != ExitOK || !strings.Contains(r.stdout, "failure rate n/a") {
		t.Errorf("health with no outcome: %v", r)
	}

	// One completed, one given up, one waiting ten minutes: 50 %, and seconds.
	seed(t, store, clock)
	clock.Set(t0.Add(10 * time.Minute))
	r = runEnv(t, env, "stats", "--dsn", b.dsn, "--json")
	var sj statsJSON
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil {
		t.Fatal(err)
	}
	if sj.SuccessRate == nil || *sj.SuccessRate != 0.5 || sj.OldestPendingAgeSeconds != 600 || sj.OldestDueAgeSeconds != 600 ||
		sj.RecentWindowSeconds != 900 || sj.RecentFailureRate == nil || *sj.RecentFailureRate != 0.5 {
		t.Errorf("stats --json: %s", r.stdout)
	}
}

// A database that does not exist is said not to exist, not to be unreachable.
func TestMissingDatabaseIsNamed(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		base := os.Getenv("OUTBOX_POSTGRES_DSN")
		if base == "" {
			t.Skip("OUTBOX_POSTGRES_DSN is not set")
		}
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/no_such_database_here"
		for _, cmd := range []string{"stats", "migrate"} {
			r := runEnv(t, Env{}, cmd, "--dsn", u.String())
			if r.code != ExitFailure || !strings.Contains(r.stderr, `has no database "no_such_database_here"`) || strings.Contains(r.stderr, "cannot reach") {
				t.Errorf("%s: %v", cmd, r)
			}
		}
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		dsn, _ := mysqlBackend(t)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/no_such_database_here"
		for _, cmd := range []string{"stats", "migrate"} {
			r := runEnv(t, Env{}, cmd, "--dsn", u.String())
			if r.code != ExitFailure || !strings.Contains(r.stderr, `MySQL at mysql://`) ||
				!strings.Contains(r.stderr, `has no database "no_such_database_here"`) || strings.Contains(r.stderr, "cannot reach") {
				t.Errorf("%s: %v", cmd, r)
			}
		}
	})
}

// A SQLite path in a folder that is not there says so, and creates nothing.
func TestSQLiteInAMissingFolderSaysSo(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "not-made")
	path := filepath.Join(dir, "app.db")
	for _, cmd := range []string{"migrate", "stats", "health"} {
		r := runEnv(t, Env{}, cmd, "--dsn", "sqlite:"+path)
		if r.code == ExitOK || !strings.Contains(r.stderr, "the folder "+dir+" does not exist") || strings.Contains(r.stderr, "(14)") {
			t.Errorf("%s: %v", cmd, r)
		}
	}
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runEnv(t, Env{}, "migrate", "--dsn", "sqlite:"+filepath.Join(file, "app.db")); r.code != ExitFailure || !strings.Contains(r.stderr, file+" is not a folder") {
		t.Errorf("migrate under a file: %v", r)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s was created", dir)
	}
}

// The summary line: counts since the last line, nothing when nothing happened.
func TestRelaySummaryLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	var tally outcomeTally
	tally.logSummary(log, 30*time.Second, "")
	if buf.Len() != 0 {
		t.Fatalf("a summary of nothing: %q", buf.String())
	}
	e := outbox.Event{Type: "t"}
	for range 3 {
		tally.ObserveDelivery(e, outbox.Outcome{Result: outbox.Delivered}, 0)
	}
	tally.ObserveDelivery(e, outbox.Outcome{Result: outbox.Failed, NextAttemptAt: t0}, 0)
	tally.ObserveDelivery(e, outbox.Outcome{Result: outbox.Failed}, 0) // given up
	tally.ObserveUnavailable(e, io.ErrUnexpectedEOF)
	tally.ObserveDelivery(e, outbox.Outcome{Result: outbox.Released}, 0)
	tally.logSummary(log, 30*time.Second, "")
	want := "level=INFO msg=deliveries delivered=3 failed=1 given_up=1 held=1 in_the_last=30s\n"
	if buf.String() != want {
		t.Fatalf("summary %q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	tally.logSummary(log, 30*time.Second, "")
	if buf.Len() != 0 {
		t.Fatalf("the counts were not reset: %q", buf.String())
	}
	// --once keeps its own counts for its exit code.
	if d, f, u := tally.counts(); d != 0 || f != 0 || u != 0 {
		t.Fatalf("counts after a summary: %d %d %d", d, f, u)
	}
}

var summaryDelivered = regexp.MustCompile(`msg=deliveries delivered=(\d+) `)

// deliveredInSummaries adds up the delivered counts of a relay's summary lines.
func deliveredInSummaries(log string) (n, lines int) {
	for _, m := range summaryDelivered.FindAllStringSubmatch(log, -1) {
		d, _ := strconv.Atoi(m[1])
		n += d
		lines++
	}
	return n, lines
}

// A running relay sums up what it delivered at info level: every --summary-interval
// while it works, and the rest when it stops. No line when nothing happened.
func TestRelayLogsAPeriodicSummary(t *testing.T) {
	t.Parallel()
	t.Run("every interval", func(t *testing.T) {
		t.Parallel()
		b := sqliteBackend(t)
		store := migrated(t, b)
		const n = 12
		var events []*outbox.Event
		for i := range n {
			events = append(events, outbox.NewEvent("order.created", fmt.Sprintf("o-%d", i), "alice"))
		}
		if err := store.Enqueue(context.Background(), time.Now(), events...); err != nil {
			t.Fatal(err)
		}
		sink := newAcceptAll(t)
		ticks := make(chan struct{}, 1)
		stderr := &syncBuffer{}
		env := Env{onSummary: func() {
			select {
			case ticks <- struct{}{}:
			default:
			}
		}}
		d := startRelayTo(t, env, stderr, "--dsn", b.dsn, "--sink", sink.srv.URL, "--summary-interval", "20ms")
		deadline := time.After(time.Minute)
		for {
			if got, _ := deliveredInSummaries(stderr.String()); got == n {
				break
			}
			select {
			case <-ticks:
			case <-deadline:
				t.Fatalf("no summary of the %d deliveries within a minute:\n%s", n, stderr.String())
			}
		}
		r := d.stop(t)
		if r.code != ExitOK {
			t.Fatalf("relay: %v", r)
		}
		if got, _ := deliveredInSummaries(r.stderr); got != n {
			t.Fatalf("summaries count %d delivered, want %d (no event counted twice):\n%s", got, n, r.stderr)
		}
	})
	t.Run("at stop", func(t *testing.T) {
		t.Parallel()
		b := sqliteBackend(t)
		store := migrated(t, b)
		if err := store.Enqueue(context.Background(), time.Now(), outbox.NewEvent("order.created", "o-1", "alice")); err != nil {
			t.Fatal(err)
		}
		obs := newOutcomes(1)
		d := startRelay(t, Env{observer: obs}, "--dsn", b.dsn, "--sink", newAcceptAll(t).srv.URL, "--summary-interval", "1h")
		waitClosed(t, obs.all, "the delivery")
		r := d.stop(t)
		if got, lines := deliveredInSummaries(r.stderr); r.code != ExitOK || got != 1 || lines != 1 || !strings.Contains(r.stderr, `span="since the last summary"`) {
			t.Fatalf("relay: %v\nwant one summary line, at stop, of the one delivery", r)
		}
	})
	t.Run("nothing happened", func(t *testing.T) {
		t.Parallel()
		b := sqliteBackend(t)
		migrated(t, b)
		ticks := make(chan struct{}, 10)
		env := Env{onSummary: func() {
			select {
			case ticks <- struct{}{}:
			default:
			}
		}}
		d := startRelay(t, env, "--dsn", b.dsn, "--sink", "http://127.0.0.1:1/", "--summary-interval", "10ms")
		for range 3 {
			waitClosed(t, ticks, "a summary tick")
		}
		if r := d.stop(t); r.code != ExitOK || strings.Contains(r.stderr, "msg=deliveries") {
			t.Fatalf("an idle relay: %v\nwant no summary line", r)
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		r := runEnv(t, Env{}, "relay", "--dsn", "sqlite:"+filepath.Join(t.TempDir(), "x.db"), "--sink", "http://x/", "--summary-interval", "0s")
		if r.code != ExitUsage || !strings.Contains(r.stderr, "--summary-interval must be positive") {
			t.Fatalf("--summary-interval 0s: %v", r)
		}
	})
}

// startRelayTo is startRelay with the relay's stderr readable while it runs.
func startRelayTo(t *testing.T, env Env, stderr *syncBuffer, args ...string) *daemon {
	t.Helper()
	started := make(chan struct{})
	env.onStart = func() { close(started) }
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan result, 1)}
	go func() {
		var out syncBuffer
		env.Stdout, env.Stderr = &out, stderr
		code := Main(ctx, append([]string{"relay"}, args...), env)
		d.done <- result{code, out.String(), stderr.String()}
	}()
	select {
	case <-started:
	case r := <-d.done:
		t.Fatalf("relay exited at start: %v", r)
	}
	t.Cleanup(cancel)
	return d
}

// A signal whose drain outlasts --drain-timeout: the delivery still running is cut
// short and its event handed back, and the relay exits 0, as its help says.
func TestRelayPastTheDrainTimeoutExitsZero(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	e := outbox.NewEvent("order.created", "o-1", "alice")
	if err := store.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	inFlight := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(inFlight) })
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	d := startRelay(t, Env{}, "--dsn", b.dsn, "--sink", srv.URL, "--drain-timeout", "50ms", "--sink-timeout", "1h", "--handler-timeout", "1h")
	waitClosed(t, inFlight, "the delivery to start")
	r := d.stop(t)
	if r.code != ExitOK || !strings.Contains(r.stderr, "drain timeout passed") || !strings.Contains(r.stderr, "relay stopped") {
		t.Fatalf("relay stopped past its drain timeout: %v\nwant exit 0 with a warning", r)
	}
	got, err := store.Get(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status == outbox.StatusCompleted || got.GivenUp() {
		t.Fatalf("the interrupted event is %s (given up %v); want it kept, to be delivered again", got.Status, got.GivenUp())
	}
	if help := runEnv(t, Env{}, "relay", "--help"); !strings.Contains(help.stdout, "it still exits 0") {
		t.Errorf("relay --help does not say what a stop past --drain-timeout exits with")
	}
}
