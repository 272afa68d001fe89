package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/sqlite"
)

// TestMain lets the crash test re-execute this test binary as a fitiq client process.
func TestMain(m *testing.M) {
	if os.Getenv("FITIQ_TEST_CHILD") == "fitiq" {
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv("FITIQ_TEST_ARGS")), &args); err != nil {
			panic(err)
		}
		os.Exit(Run(context.Background(), args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type result struct {
	code        int
	out, errOut string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// The README's first command, shortened: it must pass its own check.
func TestDemoQuickPassesItsCheck(t *testing.T) {
	t.Parallel()
	r := run(t, "demo", "--quick")
	if r.code != exitOK {
		t.Fatalf("fitiq demo --quick exited %d\n%s%s", r.code, r.out, r.errOut)
	}
	if !strings.Contains(r.out, "synced 60/60 · duplicates 0 · lost 0") || strings.Contains(r.out, "✗") {
		t.Fatalf("the demo's summary is not clean:\n%s", r.out)
	}
	for _, want := range []string{"Total events: ", "Success rate: 100.0%", "✓ every local entry has its backend ID"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// The network did go down (the demo waits for the outage to end before its check).
	if !regexp.MustCompile(`offline [1-9][0-9.]*m?s\n`).MatchString(r.out) {
		t.Errorf("the demo's network never went offline:\n%s", r.out)
	}
}

// The check is not a formality: lose an entry at the backend behind the demo's back
// and it fails, with a non-zero exit.
func TestDemoCheckCatchesALostEntry(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	d := &demo{cfg: demoConfig{entries: 20, seed: 5, offline: 0, faults: 0, pace: time.Millisecond, timeout: time.Minute}, out: &out}
	d.beforeCheck = func(d *demo) {
		db, err := sqlite.Open(filepath.Join(d.dir, "backend.db"), sqlite.OpenConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`DELETE FROM records WHERE backend_id = (SELECT min(backend_id) FROM records WHERE kind = 'progress-entries')`); err != nil {
			t.Fatal(err)
		}
	}
	code := d.run(context.Background())
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	if code != exitFail || !strings.Contains(out.String(), "synced 19/20 · duplicates 0 · lost 1") || !strings.Contains(out.String(), "CHECK FAILED") {
		t.Fatalf("exit %d after losing an entry; want 1 with lost 1:\n%s", code, out.String())
	}
}

func TestHelpEverywhere(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"log", "status", "sync", "history", "backend", "demo"} {
		r := run(t, name, "--help")
		if r.code != exitOK || !strings.Contains(r.out, "Usage:") || !strings.Contains(r.out, "Examples:") {
			t.Errorf("fitiq %s --help: exit %d\n%s", name, r.code, r.out)
		}
		if h := run(t, "help", name); h.out != r.out {
			t.Errorf("fitiq help %s differs from fitiq %s --help", name, name)
		}
	}
	if r := run(t, "--help"); r.code != exitOK || !strings.Contains(r.out, "fitiq demo") {
		t.Errorf("fitiq --help: exit %d\n%s", r.code, r.out)
	}
}

func TestBadInputIsAUsageErrorAndWritesNothing(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "client.db")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"log", "weight", "7250", "--db", db}, "quantity: 7250 kg is out of range for weight (20–500 kg)"},
		{[]string{"log", "weight", "heavy", "--db", db}, `value "heavy" is not a number`},
		{[]string{"log", "weight", "--db", db}, "weight needs a value"},
		{[]string{"log", "mood", "3", "--db", db}, `unknown type "mood"`},
		{[]string{"log", "weight", "70", "--date", "yesterday", "--db", db}, "--date"},
		{[]string{"log", "weight", "70", "--date", "2999-01-01", "--db", db}, "date: 2999-01-01T00:00:00Z is in the future"},
		{[]string{"log", "steps", "100.5", "--db", db}, "not a whole number"},
		{[]string{"log", "profile", "--units", "cubits", "--name", "Ada", "--db", db}, "unit_system"},
		{[]string{"log", "weight", "70", "--frob", "--db", db}, "flag provided but not defined: -frob"},
		{[]string{"log", "weight", "70", "--id", "0194b7c2-0000-7000-8000-000000000001", "--db", db}, "--id: no progress-entries"},
		{[]string{"sync", "--db", db, "--token", "t", "--batch-size", "-1"}, "--batch-size must be at least 1"},
		{[]string{"sync", "--db", db, "--token", "t", "--retry-delays", "1s,soon"}, "--retry-delays"},
		{[]string{"sync", "--db", db, "--token", ""}, "no token"},
		{[]string{"history", "passwords", "--db", db}, `unknown kind "passwords"`},
		{[]string{"history", "--limit", "1000", "--db", db}, "--limit"},
		{[]string{"backend", "--token", "alice"}, "want USER=TOKEN"},
		{[]string{"demo", "--entries", "3"}, "--entries must be from 10"},
	}
	for _, c := range cases {
		r := run(t, c.args...)
		if r.code != exitUsage || !strings.Contains(r.errOut, c.want) {
			t.Errorf("fitiq %s: exit %d, stderr %q; want exit 2 naming %q", strings.Join(c.args, " "), r.code, r.errOut, c.want)
		}
	}
	r := run(t, "status", "--db", db)
	if !strings.Contains(r.out, "Total events: 0") || !strings.Contains(r.out, "progress-entries     0") {
		t.Fatalf("after the refused commands:\n%s", r.out)
	}
}

// startBackend runs "fitiq backend" on a free port and returns its URL and the token it
// issued for user.
func startBackend(t *testing.T, user string) (url, token string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"backend", "--addr", "127.0.0.1:0", "--dsn", filepath.Join(t.TempDir(), "backend.db"), "--issue", user}, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("fitiq backend exited %d", code)
		}
	})
	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		line := lines.Text()
		if tok, ok := strings.CutPrefix(line, "token for "+user+": "); ok {
			token = tok
		}
		if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(line); m != nil {
			url = m[1]
			break
		}
	}
	go io.Copy(io.Discard, pr) // keep draining, so the server never blocks writing
	if url == "" || token == "" {
		t.Fatalf("fitiq backend did not start (url %q, token %q)", url, token)
	}
	return url, token
}

func TestCLIEndToEnd(t *testing.T) {
	t.Parallel()
	url, token := startBackend(t, "me")
	db := filepath.Join(t.TempDir(), "client.db")
	client := []string{"--db", db, "--user", "me", "--api", url, "--token", token}
	cmd := func(args ...string) result {
		t.Helper()
		return run(t, append(args, client...)...)
	}

	r := cmd("log", "weight", "72.5", "--date", "2025-01-31T08:00:00Z")
	if r.code != exitOK || !strings.Contains(r.out, "saved weight 72.5 kg on 2025-01-31 08:00 UTC") || !strings.Contains(r.out, "sync event is pending") {
		t.Fatalf("log weight: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	id := regexp.MustCompile(`progress-entries (\S+) created`).FindStringSubmatch(r.out)
	if id == nil {
		t.Fatalf("log did not print the entry ID:\n%s", r.out)
	}
	for _, args := range [][]string{
		{"log", "steps", "8500", "--date", "2025-01-30"},
		{"log", "waist", "82"},
		{"log", "activity", "--steps", "9000", "--active-minutes", "48", "--calories", "540", "--distance", "6400"},
		{"log", "profile", "--name", "Ada", "--language", "en-GB"},
		{"log", "physical", "--sex", "female", "--height", "168", "--birth", "1990-04-01"},
		{"log", "weight", "72.1", "--id", id[1], "--date", "2025-01-31T08:00:00Z"},
	} {
		if r := cmd(args...); r.code != exitOK {
			t.Fatalf("%v: exit %d %s", args, r.code, r.errOut)
		}
	}
	r = cmd("status")
	for _, want := range []string{"Total events: 7", "Pending: 7", "Completed: 0", "progress-entries     2  (0 synced, 2 pending, 0 failed)"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status before sync lacks %q:\n%s", want, r.out)
		}
	}
	r = cmd("sync")
	if r.code != exitOK || !strings.Contains(r.out, "all synced") || !strings.Contains(r.out, "delivered 7") {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	r = cmd("status")
	for _, want := range []string{"Total events: 7", "Pending: 0", "Completed: 7", "Success rate: 100.0%", "Stale events: 0", "(2 synced, 0 pending, 0 failed)", "Healthy."} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status after sync lacks %q:\n%s", want, r.out)
		}
	}
	r = cmd("history", "--type", "weight", "--from", "2025-01-31", "--to", "2025-02-01")
	if r.code != exitOK || !strings.Contains(r.out, "weight 72.1 kg") || !strings.Contains(r.out, "(page 1, 1 of 1)") || strings.Contains(r.out, "steps") {
		t.Fatalf("history: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	r = cmd("history", "--local")
	if !regexp.MustCompile(`weight 72.1 kg\s+2\s+synced`).MatchString(r.out) || !regexp.MustCompile(`8500 steps\s+1\s+synced`).MatchString(r.out) {
		t.Fatalf("local history:\n%s", r.out)
	}
	if r = cmd("history", "activity"); !strings.Contains(r.out, "9000 steps") {
		t.Fatalf("activity history:\n%s", r.out)
	}
}

// A sync that cannot reach the API gives its events up after the attempt budget and
// says so with exit code 1; --retry-given-up brings them back once the API is there.
func TestSyncGivesUpThenRetries(t *testing.T) {
	t.Parallel()
	url, token := startBackend(t, "me")
	// An API that answers, and fails every request: a failure that counts. (One that
	// cannot be reached at all is an outage, which spends no attempt and gives nothing up.)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"internal"}`, http.StatusInternalServerError)
	}))
	defer failing.Close()
	deadURL := failing.URL
	db := filepath.Join(t.TempDir(), "client.db")
	base := []string{"--db", db, "--user", "me", "--token", token}
	if r := run(t, append([]string{"log", "weight", "70"}, base...)...); r.code != exitOK {
		t.Fatal(r.errOut)
	}
	r := run(t, append([]string{"sync", "--api", deadURL, "--retry-delays", "1ms", "--max-attempts", "2", "--poll", "5ms"}, base...)...)
	if r.code != exitFail || !strings.Contains(r.out, "1 events given up") || !strings.Contains(r.out, "given up 1") {
		t.Fatalf("sync against a failing API: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := run(t, append([]string{"status"}, base...)...); !strings.Contains(r.out, "(0 synced, 0 pending, 1 failed)") || r.code != exitFail {
		t.Fatalf("status after giving up: exit %d (want 1: it warns)\n%s", r.code, r.out)
	}
	r = run(t, append([]string{"sync", "--api", url, "--retry-given-up"}, base...)...)
	if r.code != exitOK || !strings.Contains(r.out, "1 given-up events back in the queue") || !strings.Contains(r.out, "all synced") {
		t.Fatalf("sync --retry-given-up: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := run(t, append([]string{"status"}, base...)...); r.code != exitOK || !strings.Contains(r.out, "Healthy.") {
		t.Fatalf("status once all is synced: exit %d\n%s", r.code, r.out)
	}
}

// Offline is not a failure of the entries: sync against an API that cannot be reached
// stops at once (the breaker opened), marks nothing failed, and syncs all once online.
func TestSyncOfflineKeepsEntriesQueued(t *testing.T) {
	t.Parallel()
	url, token := startBackend(t, "me")
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close() // nothing listens there: every connection is refused
	db := filepath.Join(t.TempDir(), "client.db")
	base := []string{"--db", db, "--user", "me", "--token", token}
	for _, w := range []string{"70", "71", "72"} {
		if r := run(t, append([]string{"log", "weight", w}, base...)...); r.code != exitOK {
			t.Fatal(r.errOut)
		}
	}
	r := run(t, append([]string{"sync", "--api", deadURL, "--max-attempts", "2", "--timeout", "1m"}, base...)...)
	if r.code != exitFail || !strings.Contains(r.out, "cannot be reached: 3 events wait, none given up") {
		t.Fatalf("sync against an unreachable API: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := run(t, append([]string{"status"}, base...)...); !strings.Contains(r.out, "(0 synced, 3 pending, 0 failed)") {
		t.Fatalf("status after an offline sync:\n%s", r.out)
	}
	if r := run(t, append([]string{"sync", "--api", url, "--max-attempts", "2"}, base...)...); r.code != exitOK || !strings.Contains(r.out, "all synced") {
		t.Fatalf("sync once online: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
}

// The demo's synced count does not go backwards when an update makes a synced entry
// pending again: it counts the entries the backend holds.
func TestDemoSyncedCountIsMonotonic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := &demo{cfg: demoConfig{entries: 1, timeout: time.Minute}, out: io.Discard}
	if err := d.setup(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	rng := rand.New(rand.NewPCG(1, 2))
	day := 0
	e, err := d.create(ctx, fitiq.KindProgressEntry, rng, time.Now(), &day)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.processor.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	before, _, err := d.progress(ctx)
	if err != nil || before != 1 {
		t.Fatalf("synced %d, %v after the create; want 1", before, err)
	}
	if _, err := d.update(ctx, e, rng); err != nil { // pending again, until the update syncs
		t.Fatal(err)
	}
	after, _, err := d.progress(ctx)
	if err != nil || after != 1 {
		t.Fatalf("synced %d, %v after an update made the entry pending; want still 1", after, err)
	}
}
