package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

// result is one run of the command.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func runEnv(t *testing.T, env Env, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env.Stdout, env.Stderr = &out, &errb
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	code := Main(context.Background(), args, env)
	return result{code, out.String(), errb.String()}
}

// backend is a store the CLI is tested against.
type backend struct {
	name string
	dsn  string
	// open returns a store on the same database, for the test to seed and inspect.
	open func(t *testing.T) outbox.Store
}

func sqliteBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "outbox.db")
	return backend{name: "sqlite", dsn: "sqlite:" + path, open: func(t *testing.T) outbox.Store {
		db, err := sqlite.Open(path, sqlite.OpenConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		s, err := sqlite.New(context.Background(), db, sqlite.Config{Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
}

// postgresBackend uses a schema of the test's own, dropped when the test ends.
func postgresBackend(t *testing.T) (backend, bool) {
	base := os.Getenv("OUTBOX_POSTGRES_DSN")
	if base == "" {
		return backend{}, false
	}
	schema := "outbox_cli_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", base, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
		admin.Close(context.Background())
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return backend{name: "postgres", dsn: base + sep + "schema=" + schema, open: func(t *testing.T) outbox.Store {
		pool, err := pgxpool.New(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		s, err := postgres.New(ctx, pool, postgres.Config{Schema: schema, Logger: outboxtest.Discard})
		if err != nil {
			pool.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(); pool.Close() })
		return s
	}}, true
}

// eachBackend runs fn against SQLite, and PostgreSQL when OUTBOX_POSTGRES_DSN is set.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteBackend(t)) })
	t.Run("postgres", func(t *testing.T) {
		b, ok := postgresBackend(t)
		if !ok {
			t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping the CLI against PostgreSQL")
		}
		fn(t, b)
	})
}

// migrated makes the backend's outbox on the table layout, which the tests that use
// it are about (a new outbox is made on the log layout unless told otherwise).
func migrated(t *testing.T, b backend) outbox.Store {
	t.Helper()
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=table"); r.code != 0 {
		t.Fatalf("migrate: %v", r)
	}
	return b.open(t)
}

// acceptAll is an HTTP sink that takes every event and records its Idempotency-Key.
type acceptAll struct {
	mu   sync.Mutex
	keys map[string]int
	srv  *httptest.Server
}

func newAcceptAll(t *testing.T) *acceptAll {
	a := &acceptAll{keys: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		a.mu.Lock()
		a.keys[r.Header.Get("Idempotency-Key")]++
		a.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *acceptAll) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}

const typeBroken = "brokenType"

// seed leaves one event completed, one given up with its error, and one pending,
// all at t0 on clock.
func seed(t *testing.T, s outbox.Store, clock *outboxtest.Clock) (done, givenUp, pending *outbox.Event) {
	t.Helper()
	ctx := context.Background()
	done = outbox.NewEvent("order.created", "entry-1", "alice")
	givenUp = outbox.NewEvent(typeBroken, "entry-2", "bob")
	givenUp.Metadata = map[string]string{"source": "manual_entry"}
	if err := s.Enqueue(ctx, t0, done, givenUp); err != nil {
		t.Fatal(err)
	}
	p, err := outbox.NewProcessor(s, outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		typeBroken: outbox.HandlerFunc(func(context.Context, outbox.Event) error {
			return outbox.Permanent(errors.New("http 422 Unprocessable Entity: weight out of range"))
		}),
	}, outbox.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	pending = outbox.NewEvent("order.shipped", "snap-1", "alice")
	pending.Payload = json.RawMessage(`{"steps":1200}`)
	if err := s.Enqueue(ctx, t0, pending); err != nil {
		t.Fatal(err)
	}
	return done, givenUp, pending
}

// tableRows parses aligned output into rows of fields split on two or more spaces.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

func TestCommandsEndToEnd(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=table")
		if r.code != 0 || !strings.Contains(r.stdout, "applied migration 1") {
			t.Fatalf("migrate: %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "is up to date") || strings.Contains(r.stdout, "log") {
			t.Fatalf("second migrate: %v", r)
		}
		store := b.open(t)
		clock := outboxtest.NewClock(t0)
		done, givenUp, pending := seed(t, store, clock)
		clock.Set(t0.Add(10 * time.Minute)) // the pending event is now stale
		env := Env{Clock: clock, Getenv: func(k string) string {
			if k == "OUTBOX_DSN" {
				return b.dsn // the environment names the store from here on
			}
			return ""
		}}

		// stats, for people and for scripts
		r = runEnv(t, env, "stats")
		want := map[string]string{"pending": "1", "processing": "0", "failed (retrying)": "0", "given up": "1", "completed": "1", "total": "3"}
		got := map[string]string{}
		for _, row := range tableRows(r.stdout) {
			if len(row) == 2 {
				got[row[0]] = row[1]
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("stats %s = %q, want %s\n%s", k, got[k], v, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "success rate 50.0% · stale 1") || !strings.Contains(r.stdout, typeBroken) {
			t.Errorf("stats summary or by-type table missing:\n%s", r.stdout)
		}
		r = runEnv(t, env, "stats", "--json", "--user", "alice")
		var sj statsJSON
		if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil || r.code != 0 {
			t.Fatalf("stats --json: %v %v", err, r)
		}
		if sj.Total != 2 || sj.Completed != 1 || sj.Pending != 1 || sj.Stale != 1 || sj.OldestPendingAgeSeconds != 600 {
			t.Fatalf("stats --json --user alice: %+v", sj)
		}

		// ls
		r = runEnv(t, env, "ls")
		rows := tableRows(r.stdout)
		if r.code != 0 || len(rows) != 4 || rows[0][1] != "ID" || rows[1][1] != done.ID || rows[2][1] != givenUp.ID || rows[3][1] != pending.ID {
			t.Fatalf("ls: %v", r)
		}
		if rows[2][5] != "given up" || !strings.Contains(r.stdout, "422 Unprocessable Entity: weight out of") {
			t.Fatalf("ls does not show the given-up event with its error:\n%s", r.stdout)
		}
		r = runEnv(t, env, "ls", "--status", "given-up")
		if rows := tableRows(r.stdout); len(rows) != 2 || rows[1][1] != givenUp.ID {
			t.Fatalf("ls --status given-up: %v", r)
		}
		r = runEnv(t, env, "ls", "--type", "order.shipped", "--json")
		var listed []outbox.Event
		if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 1 || listed[0].ID != pending.ID || compact(listed[0].Payload) != `{"steps":1200}` {
			t.Fatalf("ls --type --json: %v %v", err, r)
		}
		if r := runEnv(t, env, "ls", "--user", "nobody"); r.code != 0 || strings.TrimSpace(r.stdout) != "no events match" {
			t.Fatalf("ls of nothing: %v", r)
		}
		if rows := tableRows(runEnv(t, env, "ls", "--limit", "1").stdout); len(rows) != 2 {
			t.Fatalf("ls --limit 1 printed %d rows", len(rows)-1)
		}

		// show, with the attempt errors
		r = runEnv(t, env, "show", givenUp.ID)
		for _, want := range []string{"given up", "entry-2", "source=manual_entry", "ATTEMPT", "permanent: http 422 Unprocessable Entity: weight out of range"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("show lacks %q:\n%s", want, r.stdout)
			}
		}
		r = runEnv(t, env, "show", givenUp.ID, "--json")
		var shown outbox.Event
		if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || len(shown.Errors) != 1 || shown.Errors[0].Attempt != 1 {
			t.Fatalf("show --json: %v %v", err, r)
		}
		missing := uuid.NewString()
		if r := runEnv(t, env, "show", missing); r.code != 1 || r.stderr != "outbox show: no event "+missing+"\n" {
			t.Fatalf("show of a missing event: %v", r)
		}

		// stale and health see the waiting event and the failure
		r = runEnv(t, env, "stale")
		if rows := tableRows(r.stdout); r.code != 0 || len(rows) != 3 || rows[1][1] != pending.ID || rows[2][0] != "no stuck events" {
			t.Fatalf("stale: %v", r)
		}
		if r := runEnv(t, env, "stale", "--stale-after", "1h"); !strings.Contains(r.stdout, "no stale events") {
			t.Fatalf("stale --stale-after 1h: %v", r)
		}
		r = runEnv(t, env, "health")
		if r.code != 1 || !strings.Contains(r.stdout, "unhealthy: 3 alert(s)") || !strings.Contains(r.stdout, "stale") || !strings.Contains(r.stdout, "failure_rate") || !strings.Contains(r.stdout, "given_up") {
			t.Fatalf("health: %v", r)
		}

		// retry --given-up brings the event back; the relay delivers it with the pending one.
		r = runEnv(t, env, "retry", "--given-up", "--type", typeBroken)
		if r.code != 0 || r.stdout != "retried 1 given-up events\n" {
			t.Fatalf("retry --given-up: %v", r)
		}
		if e, _ := store.Get(context.Background(), givenUp.ID); e.Status != outbox.StatusPending || e.Attempts != 0 || len(e.Errors) != 1 {
			t.Fatalf("after retry: %+v", e)
		}
		sink := newAcceptAll(t)
		r = runEnv(t, env, "relay", "--sink", sink.srv.URL, "--once")
		if r.code != 0 || !strings.Contains(r.stdout, "claimed 2 events: 2 delivered, 0 failed, 0 held by a fault of the sink; now 0 pending, 0 retrying, 0 given up, 3 completed") {
			t.Fatalf("relay --once: %v", r)
		}
		if sink.keys[givenUp.ID] != 1 || sink.keys[pending.ID] != 1 || sink.count() != 2 {
			t.Fatalf("sink received %v", sink.keys)
		}
		if r := runEnv(t, env, "health"); r.code != 0 || !strings.HasPrefix(r.stdout, "healthy") {
			t.Fatalf("health after delivery: %v", r)
		}
		if r := runEnv(t, env, "retry", done.ID); r.code != 1 || !strings.Contains(r.stderr, "is completed: nothing to retry") {
			t.Fatalf("retry of a completed event: %v", r)
		}

		// purge: nothing is old enough at first; eight days on, all three go.
		if r := runEnv(t, env, "purge", "--completed-before", "7d"); r.code != 0 || !strings.HasPrefix(r.stdout, "deleted 0 events") {
			t.Fatalf("purge too early: %v", r)
		}
		clock.Advance(8 * 24 * time.Hour)
		r = runEnv(t, env, "purge", "--completed-before", "7d", "--json")
		var purged struct{ Deleted int }
		if err := json.Unmarshal([]byte(r.stdout), &purged); err != nil || purged.Deleted != 3 {
			t.Fatalf("purge: %v %v", err, r)
		}
		if st, _ := store.Stats(context.Background(), outbox.StatsQuery{Now: clock.Now()}); st.Total != 0 {
			t.Fatalf("after purge: %+v", st)
		}
	})
}

// health's exit code is for monitoring scripts: 0 healthy, 1 alerts, 2 cannot tell.
func compact(b []byte) string {
	var out bytes.Buffer
	_ = json.Compact(&out, b)
	return out.String()
}

func TestHealthExitCodes(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		store := migrated(t, b)
		clock := outboxtest.NewClock(t0)
		env := Env{Clock: clock}
		health := func() result { return runEnv(t, env, "health", "--dsn", b.dsn) }

		if r := health(); r.code != 0 || !strings.HasPrefix(r.stdout, "healthy") {
			t.Fatalf("empty queue: %v", r)
		}
		// A queue that moves is healthy; one that waits longer than 5 minutes is stale.
		e := outbox.NewEvent("order.created", "entry-1", "alice")
		if err := store.Enqueue(context.Background(), t0, e); err != nil {
			t.Fatal(err)
		}
		if r := health(); r.code != 0 {
			t.Fatalf("fresh pending event: %v", r)
		}
		clock.Advance(6 * time.Minute)
		if r := health(); r.code != 1 || !strings.Contains(r.stdout, "stale") {
			t.Fatalf("stale queue: %v", r)
		}
		// A failing queue: the event is given up; nothing is stale any more.
		p, _ := outbox.NewProcessor(store, outbox.HandlerFunc(func(context.Context, outbox.Event) error {
			return outbox.Permanent(errors.New("http 400"))
		}), outbox.Config{Clock: clock, Logger: outboxtest.Discard})
		if _, err := p.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		r := runEnv(t, env, "health", "--dsn", b.dsn, "--json")
		var h struct {
			Healthy bool
			Alerts  []outbox.Alert
		}
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != 1 || h.Healthy || len(h.Alerts) != 2 ||
			h.Alerts[0].Rule != "failure_rate" || h.Alerts[1].Rule != "given_up" {
			t.Fatalf("failing queue: %v %v", err, r)
		}
		// An hour on, the give-up is out of the window: no rate, no given_up alert.
		clock.Advance(time.Hour)
		if r := health(); r.code != 0 {
			t.Fatalf("an hour after the failure: %v", r)
		}
	})
	t.Run("cannot tell", func(t *testing.T) {
		dir := t.TempDir()
		garbage := filepath.Join(dir, "garbage.db")
		if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 100), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, dsn := range []string{
			"sqlite:" + filepath.Join(dir, "missing.db"),
			"sqlite:" + garbage,
			"postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2",
		} {
			r := runEnv(t, Env{}, "health", "--dsn", dsn)
			if r.code != 2 || !strings.HasPrefix(r.stderr, "outbox health: cannot tell: ") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("health on %s: %v", dsn, r)
			}
		}
	})
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Bad input: exit 2, one line naming the problem, and nothing written.
func TestBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "outbox.db")
	b := backend{dsn: "sqlite:" + dbPath}
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 {
		t.Fatal(r)
	}
	fresh := filepath.Join(dir, "never-created.db")
	dsn := b.dsn
	tests := []struct {
		name string
		args []string
		want string // in the one line on stderr
	}{
		{"malformed DSN", []string{"stats", "--dsn", "localhost:5432"}, `unsupported DSN scheme "localhost"`},
		{"DSN without scheme", []string{"stats", "--dsn", "outbox.db"}, `malformed DSN "outbox.db"`},
		{"sqlite DSN without path", []string{"migrate", "--dsn", "sqlite:"}, "sqlite: needs a file path"},
		{"postgres DSN malformed", []string{"migrate", "--dsn", "postgres://u:p@host:notaport/db"}, "malformed DSN"},
		{"no DSN", []string{"stats"}, "no store given"},
		{"unknown sink scheme", []string{"relay", "--dsn", dsn, "--sink", "mqtt://broker:1883"}, `unknown sink scheme "mqtt"`},
		{"unknown sink scheme, fresh file", []string{"relay", "--dsn", "sqlite:" + fresh, "--sink", "ftp://x"}, `unknown sink scheme "ftp"`},
		{"sink not a URL", []string{"relay", "--dsn", dsn, "--sink", "just-a-host"}, "is not a URL"},
		{"no sink", []string{"relay", "--dsn", dsn}, "--sink is required"},
		{"negative batch size", []string{"relay", "--dsn", dsn, "--sink", "http://127.0.0.1:1/", "--batch-size", "-5"}, "--batch-size must be positive, got -5"},
		{"negative batch size, fresh file", []string{"relay", "--dsn", "sqlite:" + fresh, "--sink", "http://127.0.0.1:1/", "--batch-size", "-1"}, "--batch-size must be positive"},
		{"bad retry delays", []string{"relay", "--dsn", dsn, "--sink", "http://x/", "--retry-delays", "1s,soon"}, `"soon" is not a non-negative duration`},
		{"bad subject template", []string{"relay", "--dsn", dsn, "--sink", "nats://127.0.0.1:4222", "--subject", "outbox.{kind}"}, "unknown placeholder {kind}"},
		{"bad header", []string{"relay", "--dsn", dsn, "--sink", "http://x/", "--header", "novalue"}, "want 'Name: value'"},
		{"bad metrics address", []string{"relay", "--dsn", dsn, "--sink", "http://x/", "--metrics-addr", "a:b:c"}, "--metrics-addr"},
		{"unknown status in ls", []string{"ls", "--dsn", dsn, "--status", "stuck"}, `unknown status "stuck"`},
		{"negative limit", []string{"ls", "--dsn", dsn, "--limit", "-1"}, "--limit must be positive"},
		{"unknown flag", []string{"ls", "--dsn", dsn, "--colour"}, "flag provided but not defined: -colour"},
		{"unknown command", []string{"replay"}, `unknown command "replay"`},
		{"show without ID", []string{"show", "--dsn", dsn}, "want exactly one event ID"},
		{"show non-UUID", []string{"show", "--dsn", dsn, "42"}, `"42" is not an event ID`},
		{"retry both forms", []string{"retry", "--dsn", dsn, "--given-up", uuid.NewString()}, "not both"},
		{"retry nothing", []string{"retry", "--dsn", dsn}, "give event IDs, or --given-up"},
		{"purge without age", []string{"purge", "--dsn", dsn}, "--completed-before is required"},
		{"purge with bad age", []string{"purge", "--dsn", dsn, "--completed-before", "a week"}, `invalid duration "a week"`},
		{"purge negative age", []string{"purge", "--dsn", dsn, "--completed-before", "-1h"}, "must not be negative"},
		{"health bad rate", []string{"health", "--dsn", dsn, "--max-failure-rate", "5"}, "--max-failure-rate"},
		{"stray argument", []string{"stats", "--dsn", dsn, "extra"}, `unexpected argument "extra"`},
	}
	before := fileSum(t, dbPath)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEnv(t, Env{}, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2\n%v", r.code, r)
			}
			if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q: want one line containing %q", r.stderr, tt.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Fatalf("%s was created", fresh)
			}
			if fileSum(t, dbPath) != before {
				t.Fatalf("the database file changed")
			}
		})
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	for _, c := range commands {
		r := runEnv(t, Env{}, c.name, "--help")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: outbox "+c.name) || !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%s --help: %v", c.name, r)
		}
		if c.needsDSN && !strings.Contains(r.stdout, "--dsn string") {
			t.Errorf("%s --help does not list --dsn", c.name)
		}
	}
	if r := runEnv(t, Env{}, "--help"); r.code != 0 || !strings.Contains(r.stdout, "relay") || !strings.Contains(r.stdout, "Exit codes") {
		t.Errorf("--help: %v", r)
	}
	if r := runEnv(t, Env{}); r.code != 2 {
		t.Errorf("no command: %v", r)
	}
	if r := runEnv(t, Env{}, "relay", "--help"); !strings.Contains(r.stdout, "--batch-size int") || !strings.Contains(r.stdout, "(default 10)") ||
		!strings.Contains(r.stdout, "--retry-delays string") || !strings.Contains(r.stdout, "(default 1s,5s,30s,2m,10m)") ||
		!strings.Contains(r.stdout, "--poll-interval duration") || !strings.Contains(r.stdout, "(default 2s)") {
		t.Errorf("relay --help does not show the documented defaults:\n%s", r.stdout)
	}
}

// failAll enqueues n events and gives each of them up, at t0.
func givenUpEvents(t *testing.T, s outbox.Store, clock *outboxtest.Clock, n int) {
	t.Helper()
	for start := 0; start < n; start += 500 {
		var batch []*outbox.Event
		for i := start; i < min(start+500, n); i++ {
			batch = append(batch, outbox.NewEvent("order.created", fmt.Sprintf("entry-%d", i), "alice"))
		}
		if err := s.Enqueue(context.Background(), t0, batch...); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := outbox.NewProcessor(s, outbox.HandlerFunc(func(context.Context, outbox.Event) error {
		return outbox.Permanent(errors.New("receiver rejected it"))
	}), outbox.Config{Clock: clock, BatchSize: 500, Logger: outboxtest.Discard,
		// No deadline on the store's calls: a busy machine takes its time (the lease
		// only matters to a processor that dies).
		LeaseDuration: time.Hour, RoundTripTimeout: -1})
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Many given-up events come back in batches, with progress; the relay then delivers
// every one, once. Five batches of 50 show the batching and the progress as well as
// five of 500 did, in a tenth of the time; the deadlines are an hour (--timeout for
// the operator commands, a third of --lease for the relay's calls, none for the
// setup's processor), so that a busy machine cannot fail it.
func TestRetryAndPurgeManyWithProgress(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	store := migrated(t, b)
	clock := outboxtest.NewClock(t0)
	const n = 250
	givenUpEvents(t, store, clock, n)
	env := Env{Clock: clock}

	r := runEnv(t, env, "retry", "--dsn", b.dsn, "--timeout", "1h", "--given-up", "--batch-size", "50")
	if r.code != 0 || r.stdout != fmt.Sprintf("retried %d given-up events\n", n) {
		t.Fatalf("retry --given-up: %v", r)
	}
	wantProgress := "retrying given-up events: 0/250 (0%)\n" +
		"retrying given-up events: 50/250 (20%)\n" +
		"retrying given-up events: 100/250 (40%)\n" +
		"retrying given-up events: 150/250 (60%)\n" +
		"retrying given-up events: 200/250 (80%)\n" +
		"retrying given-up events: 250/250 (100%)\n"
	if r.stderr != wantProgress {
		t.Fatalf("progress:\n%s\nwant:\n%s", r.stderr, wantProgress)
	}

	sink := newAcceptAll(t)
	r = runEnv(t, env, "relay", "--dsn", b.dsn, "--sink", sink.srv.URL, "--once", "--batch-size", "50", "--max-concurrent", "8",
		"--lease", "3h", "--log-level", "warn")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("0 given up, %d completed", n)) {
		t.Fatalf("relay --once: %v", r)
	}
	if sink.count() != n {
		t.Fatalf("sink received %d distinct events, want %d", sink.count(), n)
	}

	clock.Advance(48 * time.Hour)
	r = runEnv(t, env, "purge", "--dsn", b.dsn, "--timeout", "1h", "--completed-before", "1d", "--batch-size", "100")
	if r.code != 0 || !strings.HasPrefix(r.stdout, fmt.Sprintf("deleted %d events", n)) {
		t.Fatalf("purge: %v", r)
	}
	if !strings.Contains(r.stderr, "purging completed events: 100/250 (40%)") || !strings.HasSuffix(r.stderr, "purging completed events: 250/250 (100%)\n") {
		t.Fatalf("purge progress:\n%s", r.stderr)
	}
}

func TestProgressBarOnTerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := newProgress(&Env{Stderr: &buf, StderrIsTerminal: true}, "retrying", 4, 1)
	p.add(1)
	p.add(3)
	p.finish()
	want := "\rretrying [                              ]   0% 0/4" +
		"\rretrying [=======                       ]  25% 1/4" +
		"\rretrying [==============================] 100% 4/4\n"
	if buf.String() != want {
		t.Fatalf("bar %q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	p = newProgress(&Env{Stderr: &buf, StderrIsTerminal: true}, "retrying", 4, 10) // one batch: no bar
	p.add(4)
	p.finish()
	if buf.Len() != 0 {
		t.Fatalf("a one-batch operation drew %q", buf.String())
	}
}

func TestDurations(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour, "90s": 90 * time.Second, "2h30m": 150 * time.Minute} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"d", "xd", "7days", "week", ""} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q) succeeded", bad)
		}
	}
	for d, want := range map[time.Duration]string{time.Hour: "1h", 2 * time.Minute: "2m", 30 * time.Second: "30s", 7 * 24 * time.Hour: "7d", 90 * time.Minute: "1h30m"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for in, want := range map[string]string{":9464": "127.0.0.1:9464", "9464": "127.0.0.1:9464", "0.0.0.0:9464": "0.0.0.0:9464", "[::1]:1": "[::1]:1"} {
		if got, err := metricsAddr(in); err != nil || got != want {
			t.Errorf("metricsAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
