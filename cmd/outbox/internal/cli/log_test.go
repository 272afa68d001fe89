package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// orderedSink is an HTTP sink that records the event IDs it is sent, in the order
// they arrive, and holds the events named in hold until release is closed.
type orderedSink struct {
	mu      sync.Mutex
	got     []string
	srv     *httptest.Server
	hold    map[string]bool
	release chan struct{}
}

func newOrderedSink(t *testing.T, hold ...string) *orderedSink {
	s := &orderedSink{hold: map[string]bool{}, release: make(chan struct{})}
	for _, id := range hold {
		s.hold[id] = true
	}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get("Idempotency-Key")
		if s.hold[id] {
			<-s.release
		}
		s.mu.Lock()
		s.got = append(s.got, id)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		s.srv.Close()
	})
	return s
}

func (s *orderedSink) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// await polls cond until it holds, failing t after a minute.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The log layout's commands: migrate --layout=log (idempotent; on PostgreSQL with its
// shards, a differing count refused), enqueue --layout=log, relay --layout=log --once,
// and the refusals of a store without a log and of MySQL.
func TestLogLayoutCommands(t *testing.T) {
	t.Parallel()
	r := runEnv(t, Env{}, "migrate", "--dsn", "mysql://app@127.0.0.1:1/app", "--layout=log")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "MySQL and MariaDB keep the table layout") ||
		!strings.Contains(r.stderr, "docs/log-layout.md#mysql-and-mariadb-why-they-keep-the-table-layout") {
		t.Errorf("migrate --layout=log on MySQL: want exit 2 pointing to the docs, got %v", r)
	}
	if r := runEnv(t, Env{}, "enqueue", "--dsn", "mysql://app@127.0.0.1:1/app", "--layout=log", "--type", "x", "--entity", "e"); r.code != ExitUsage ||
		!strings.Contains(r.stderr, "MySQL and MariaDB keep the table layout") {
		t.Errorf("enqueue --layout=log on MySQL: want exit 2, got %v", r)
	}
	if r := runEnv(t, Env{}, "relay", "--dsn", "sqlite:"+t.TempDir()+"/none.db", "--layout=log", "--sink", "http://127.0.0.1:1/", "--type", "x"); r.code != ExitUsage ||
		!strings.Contains(r.stderr, "--type with --layout=log needs --log-cursor NAME") {
		t.Errorf("relay --layout=log --type without --log-cursor: want exit 2, got %v", r)
	}
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		sink := newAcceptAll(t)
		r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--layout=log", "--sink", sink.srv.URL, "--once")
		if r.code != ExitFailure || !strings.Contains(r.stderr, "run 'outbox migrate --layout=log'") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("relay --layout=log before the log is migrated: want exit 1 naming the command, once, got %v", r)
		}

		args := []string{"migrate", "--dsn", b.dsn, "--layout=log"}
		wantLog := "the log: applied migration " + versionList(sqlite.LogSchemaVersion) + "\n"
		if b.name == "postgres" {
			args = append(args, "--shards", "2")
			wantLog = " (2 shards): applied migration " + versionList(postgres.LogSchemaVersion) + "\n"
		}
		if r := runEnv(t, Env{}, args...); r.code != 0 || !strings.Contains(r.stdout, "is up to date\n") || !strings.HasSuffix(r.stdout, wantLog) {
			t.Fatalf("migrate --layout=log: want the table up to date and the log migrated (%q), got %v", wantLog, r)
		}
		r = runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log")
		if r.code != 0 || strings.Count(r.stdout, "is up to date\n") != 2 {
			t.Errorf("migrate --layout=log again: want both up to date, got %v", r)
		}
		if b.name == "postgres" {
			r = runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log", "--shards", "3")
			if r.code != ExitUsage || !regexp.MustCompile(`--shards 3: the log \S+\.outbox_log was made with 2 shards, and a log keeps the shards it was made with`).MatchString(r.stderr) {
				t.Errorf("migrate --layout=log --shards 3 on a log of 2: want it refused, got %v", r)
			}
		} else if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log", "--shards", "2"); r.code != ExitUsage {
			t.Errorf("migrate --layout=log --shards on SQLite: want exit 2, got %v", r)
		}

		r = runEnv(t, Env{Stdin: strings.NewReader(`{"type":"order.created","entity_id":"o-1","ordering_key":"o-1"}
{"type":"order.paid","entity_id":"o-1","ordering_key":"o-1"}
`)}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl")
		appended := ids(r)
		if r.code != 0 || len(appended) != 2 {
			t.Fatalf("enqueue --layout=log: want two IDs, got %v", r)
		}
		if r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--layout=log", "--type", "x"); r.code != ExitUsage || !strings.Contains(r.stderr, "--entity") {
			t.Errorf("enqueue --layout=log without --entity: want it refused as today, got %v", r)
		}
		if st, err := b.open(t).Stats(context.Background(), outbox.StatsQuery{}); err != nil || st.Total != 0 {
			t.Errorf("after enqueue --layout=log the events table holds %d events (%v), want none", st.Total, err)
		}

		relay := []string{"relay", "--dsn", b.dsn, "--layout=log", "--sink", sink.srv.URL, "--once"}
		if b.name == "postgres" { // both shards at once
			relay = append(relay, "--log-concurrency", "2")
		} else if r := runEnv(t, Env{}, append(relay, "--log-concurrency", "2")...); r.code != ExitUsage {
			t.Errorf("relay --log-concurrency on SQLite: want exit 2, got %v", r)
		}
		observed := newOutcomes(2) // the relay's observers (metrics, summaries, traces) hear the log relay too
		r = runEnv(t, Env{observer: observed}, relay...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "read 2 events from the log: 2 delivered, 0 failed") ||
			!strings.Contains(r.stdout, "claimed 0 events: 0 delivered") {
			t.Fatalf("relay --layout=log --once: %v", r)
		}
		observed.mu.Lock()
		if n := observed.count[outbox.Delivered]; n != 2 {
			t.Errorf("the relay's observers heard %d deliveries from the log, want 2", n)
		}
		observed.mu.Unlock()
		if b.name == "sqlite" { // --once trims the log behind its cursor: all but the row at its position
			db, err := sqlite.Open(strings.TrimPrefix(b.dsn, "sqlite:"), sqlite.OpenConfig{})
			if err != nil {
				t.Fatal(err)
			}
			var left int
			if err := db.QueryRow(`SELECT count(*) FROM outbox_log`).Scan(&left); err != nil || left != 1 {
				t.Errorf("the log holds %d events after relay --once (%v), want 1 (the row at the cursor)", left, err)
			}
			db.Close()
		}
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, id := range appended {
			if sink.keys[id] != 1 {
				t.Errorf("event %s delivered %d times, want once", id, sink.keys[id])
			}
		}
	})
}

// Moving onto the log layout with events pending in the events table: a key's events
// written to the table before the move, and its later events appended to the log, are
// all delivered once and in the key's order by relay --layout=log, which leaves the
// table drained. The sink holds the table's first event until the log relay has sent
// the key's log events to the table behind it, so the test goes through that path.
func TestMovingOntoTheLogLayout(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		store := migrated(t, b)
		var table []string // k's events in the events table, written before the move
		for i := range 2 {
			r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--type", "order.step", "--entity", "o-1", "--ordering-key", "k",
				"--payload", fmt.Sprintf(`{"step":%d}`, i+1))
			if r.code != 0 {
				t.Fatalf("enqueue: %v", r)
			}
			table = append(table, ids(r)...)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		r := runEnv(t, Env{Stdin: strings.NewReader(`{"type":"order.step","entity_id":"o-1","ordering_key":"k","payload":{"step":3}}
{"type":"order.step","entity_id":"o-1","ordering_key":"k","payload":{"step":4}}
{"type":"order.other","entity_id":"o-2","ordering_key":"j"}
`)}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl")
		logged := ids(r)
		if r.code != 0 || len(logged) != 3 {
			t.Fatalf("enqueue --layout=log: %v", r)
		}
		want := append(slices.Clone(table), logged[:2]...)

		sink := newOrderedSink(t, table[0])
		d := startRelay(t, Env{}, "--dsn", b.dsn, "--layout=log", "--sink", sink.srv.URL, "--poll-interval", "50ms")
		// The log relay finds k unfinished in the table and moves k's log events there.
		await(t, "the log relay to move k's log events behind the table's", func() bool {
			evs, err := store.List(context.Background(), outbox.Filter{Limit: 10})
			return err == nil && len(evs) == 4
		})
		await(t, "j, which has nothing in the table, delivered from the log", func() bool {
			return slices.Contains(sink.received(), logged[2])
		})
		close(sink.release)
		await(t, "every event delivered", func() bool { return len(sink.received()) >= 5 })
		await(t, "the events table drained", func() bool {
			st, err := store.Stats(context.Background(), outbox.StatsQuery{})
			return err == nil && st.Completed == st.Total
		})
		res := d.stop(t)
		if res.code != 0 {
			t.Errorf("relay exit: %v", res)
		}
		got := sink.received()
		if len(got) != 5 {
			t.Errorf("delivered %v, want each of the 5 events once", got)
		}
		var k []string
		for _, id := range got {
			if id != logged[2] {
				k = append(k, id)
			}
		}
		if !slices.Equal(k, want) {
			t.Errorf("key k delivered in the order %v, want %v (two from the table, then two from the log)", k, want)
		}
	})
}

// On a signal, relay --layout=log lets the log relay's delivery in flight finish before
// it stops, and exits 0; past --drain-timeout it cuts the delivery short, warns, and
// still exits 0.
func TestLogRelayStopLetsDeliveriesFinish(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
		t.Fatalf("migrate --layout=log: %v", r)
	}
	var (
		arrived = make(chan struct{}, 1)
		mu      sync.Mutex
		release = make(chan struct{}) // closed when the sink may answer
		cut     []string              // deliveries whose request was cancelled before the sink answered
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		answer := release
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-answer:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
			mu.Lock()
			cut = append(cut, r.Header.Get("Idempotency-Key"))
			mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)

	relay := func(drainTimeout string, atSignal func(stderr *syncBuffer)) result {
		r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--layout=log", "--type", "order.created", "--entity", "o-1")
		if r.code != 0 {
			t.Fatalf("enqueue --layout=log: %v", r)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- Main(ctx, []string{"relay", "--dsn", b.dsn, "--layout=log", "--sink", srv.URL, "--drain-timeout", drainTimeout},
				Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
		}()
		select {
		case <-arrived:
		case <-time.After(time.Minute):
			t.Fatal("gave up waiting for the log relay's delivery")
		}
		cancel()
		atSignal(&errb)
		select {
		case code := <-done:
			return result{code, out.String(), errb.String()}
		case <-time.After(time.Minute):
			t.Fatal("relay did not stop within a minute of its signal")
			return result{}
		}
	}

	r := relay("1m", func(stderr *syncBuffer) {
		await(t, "the relay to take the signal", func() bool { return strings.Contains(stderr.String(), "signal received") })
		mu.Lock()
		close(release)
		mu.Unlock()
	})
	mu.Lock()
	if r.code != 0 || len(cut) > 0 || strings.Contains(r.stderr, "drain timeout passed") {
		t.Errorf("a stop during a delivery from the log: want it finished and exit 0, got cut %v and %v", cut, r)
	}
	release = make(chan struct{}) // the next deliveries are never answered
	mu.Unlock()
	r = relay("50ms", func(*syncBuffer) {})
	if r.code != 0 || !strings.Contains(r.stderr, "drain timeout passed") {
		t.Errorf("a stop past --drain-timeout: want a warning and exit 0, got %v", r)
	}
	mu.Lock()
	close(release)
	mu.Unlock()
}

// /metrics counts what waits on the log, and /readyz says when a fault of the sink
// holds the log, as it does for the events table's breaker: here the table is empty,
// and only the log relay meets the fault.
func TestLogRelayHeldIsNotReady(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
		t.Fatalf("migrate --layout=log: %v", r)
	}
	if r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--layout=log", "--type", "order.created", "--entity", "o-1"); r.code != 0 {
		t.Fatalf("enqueue --layout=log: %v", r)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there: a dial error, the destination's fault
	addr := make(chan string, 1)
	d := startRelay(t, Env{onListen: func(a string) { addr <- a }}, "--dsn", b.dsn, "--layout=log", "--sink", down.URL, "--metrics-addr", "127.0.0.1:0")
	base := "http://" + <-addr
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^outbox_log_events_waiting 1$`).Match(page) {
		t.Errorf("/metrics: want outbox_log_events_waiting 1 (the event on the log), got:\n%s", grepLines(string(page), "outbox_log_"))
	}
	await(t, "/readyz to say that the log is held", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "delivery from the log held since")
	})
	if r := d.stop(t); r.code != 0 {
		t.Errorf("relay exit: %v", r)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// stats, health and serve with --layout=log see what waits on the event log, which the
// events table's counts do not: before any log relay has read it (no cursor yet), and
// after; health alerts log_behind past --max-oldest-due. A store whose log is not
// migrated is refused naming the migration, MySQL and --user are refused.
func TestOperatorCommandsSeeTheLog(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"stats", "health", "serve"} {
		if r := runEnv(t, Env{}, cmd, "--dsn", "mysql://app@127.0.0.1:1/app", "--layout=log"); r.code != ExitUsage ||
			!strings.Contains(r.stderr, "MySQL and MariaDB keep the table layout") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s --layout=log on MySQL: want exit 2, once, got %v", cmd, r)
		}
	}
	if r := runEnv(t, Env{}, "health", "--dsn", "sqlite:"+t.TempDir()+"/none.db", "--layout=log", "--user", "u"); r.code != ExitUsage ||
		!strings.Contains(r.stderr, "--user with --layout=log: the event log is not kept by user") {
		t.Errorf("health --layout=log --user: want exit 2, got %v", r)
	}
	type logJSON struct {
		EventsWaiting           *int64   `json:"events_waiting"`
		OldestWaitingAgeSeconds *float64 `json:"oldest_waiting_age_seconds"`
	}
	statsLog := func(t *testing.T, r result) logJSON {
		t.Helper()
		var st struct{ Log *logJSON }
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || st.Log == nil ||
			st.Log.EventsWaiting == nil || st.Log.OldestWaitingAgeSeconds == nil {
			t.Fatalf("stats --layout=log --json: want a log object with both fields (%v), got %v", err, r)
		}
		return *st.Log
	}
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		r := runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log")
		if r.code != ExitFailure || !strings.Contains(r.stderr, "run 'outbox migrate --layout=log'") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("stats --layout=log before the log is migrated: want exit 1 naming the command, once, got %v", r)
		}
		r = runEnv(t, Env{}, "health", "--dsn", b.dsn, "--layout=log")
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "outbox health: cannot tell: ") || !strings.Contains(r.stderr, "outbox migrate --layout=log") {
			t.Errorf("health --layout=log before the log is migrated: want exit 2 (cannot tell) naming the command, got %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		if l := statsLog(t, runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log", "--json")); *l.EventsWaiting != 0 || *l.OldestWaitingAgeSeconds != 0 {
			t.Errorf("an empty log: want 0 waiting, age 0, got %d, %g", *l.EventsWaiting, *l.OldestWaitingAgeSeconds)
		}
		if r := runEnv(t, Env{Stdin: strings.NewReader(`{"type":"order.created","entity_id":"o-1"}
{"type":"order.created","entity_id":"o-2"}
`)}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl"); r.code != 0 {
			t.Fatalf("enqueue --layout=log: %v", r)
		}

		// 20 minutes on, with no log relay: behind.
		later := Env{Clock: outboxtest.NewClock(time.Now().Add(20 * time.Minute))}
		r = runEnv(t, later, "stats", "--dsn", b.dsn, "--layout=log")
		if r.code != 0 || !regexp.MustCompile(`(?m)^on the log \(not counted above\): 2 waiting for the log relay · oldest waiting 20m(\d+s)?\non the log: 0 delivered in the last 15m \(in the completed above\)$`).MatchString(r.stdout) {
			t.Errorf("stats --layout=log: want the log's line, got %v", r)
		}
		if l := statsLog(t, runEnv(t, later, "stats", "--dsn", b.dsn, "--layout=log", "--json")); *l.EventsWaiting != 2 ||
			*l.OldestWaitingAgeSeconds < 1200 || *l.OldestWaitingAgeSeconds > 1300 {
			t.Errorf("stats --layout=log --json: want 2 waiting for about 1200 s, got %d, %g", *l.EventsWaiting, *l.OldestWaitingAgeSeconds)
		}
		if r := runEnv(t, later, "health", "--dsn", b.dsn, "--layout=table"); r.code != 0 {
			t.Errorf("health on the table layout does not see the log: want exit 0, got %v", r)
		}
		for _, layout := range [][]string{{"--layout=log"}, nil} { // without --layout: the store has a log
			r = runEnv(t, later, append([]string{"health", "--dsn", b.dsn}, layout...)...)
			if r.code != ExitFailure || !regexp.MustCompile(`(?m)^  log_behind    the oldest of 2 events waiting on the log has waited 20m(\d+s)?, above 15m: is a log relay running`).MatchString(r.stdout) {
				t.Errorf("health %v, the log 20m behind: want exit 1 and log_behind, got %v", layout, r)
			}
		}
		r = runEnv(t, later, "health", "--dsn", b.dsn, "--layout=log", "--json")
		var h struct {
			Healthy bool
			Alerts  []outbox.Alert
			Stats   struct{ Log *logJSON }
		}
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != ExitFailure || h.Healthy || len(h.Alerts) != 1 ||
			h.Alerts[0].Rule != "log_behind" || h.Alerts[0].Threshold != 900 || h.Stats.Log == nil || *h.Stats.Log.EventsWaiting != 2 {
			t.Errorf("health --layout=log --json: want one log_behind alert, threshold 900, and the log's stats (%v), got %v", err, r)
		}
		if r := runEnv(t, later, "health", "--dsn", b.dsn, "--layout=log", "--max-oldest-due=-1s"); r.code != 0 {
			t.Errorf("health --layout=log --max-oldest-due=-1s: want no rule, exit 0, got %v", r)
		}
		r = runEnv(t, Env{}, "health", "--dsn", b.dsn, "--layout=log")
		if r.code != 0 || !strings.Contains(r.stdout, "; 2 waiting on the log, oldest ") {
			t.Errorf("health --layout=log, the log's events fresh: want healthy, saying what waits on the log, got %v", r)
		}

		// A log relay delivers them: nothing waits behind its cursor.
		sink := newAcceptAll(t)
		if r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--layout=log", "--sink", sink.srv.URL, "--once"); r.code != 0 {
			t.Fatalf("relay --layout=log --once: %v", r)
		}
		if l := statsLog(t, runEnv(t, later, "stats", "--dsn", b.dsn, "--layout=log", "--json")); *l.EventsWaiting != 0 || *l.OldestWaitingAgeSeconds != 0 {
			t.Errorf("after the log relay: want 0 waiting, age 0, got %d, %g", *l.EventsWaiting, *l.OldestWaitingAgeSeconds)
		}
		if r := runEnv(t, later, "health", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Errorf("health --layout=log after the log relay: want exit 0, got %v", r)
		}
	})
}

// versionList is "1, 2, …, n", as migrate prints the versions it applied.
func versionList(n int) string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = strconv.Itoa(i + 1)
	}
	return strings.Join(vs, ", ")
}

// On the log layout a delivery leaves no row in the events table, and a failure moves
// there: health and stats with --layout=log count the log's deliveries within the
// window among its completed events, so one failure among 30 events reads as 3.3 %,
// not as the 100 % the events table alone shows (and alerts on).
func TestLogHealthCountsTheLogsDeliveries(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		var lines strings.Builder
		for i := range 30 {
			fmt.Fprintf(&lines, "{\"type\":\"order.created\",\"entity_id\":\"o-%d\"}\n", i)
		}
		if r := runEnv(t, Env{Stdin: strings.NewReader(lines.String())}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl"); r.code != 0 {
			t.Fatalf("enqueue --layout=log: %v", r)
		}
		// The first event the sink sees fails, every time: a 500, worth a retry.
		var (
			mu      sync.Mutex
			failing string
		)
		sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			defer mu.Unlock()
			if key := r.Header.Get("Idempotency-Key"); failing == "" || failing == key {
				failing = key
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(sink.Close)
		if r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--layout=log", "--sink", sink.URL, "--once"); r.code != ExitFailure ||
			!strings.Contains(r.stdout, "read 30 events from the log: 29 delivered, 1 failed") {
			t.Fatalf("relay --layout=log --once: want 29 delivered and 1 failed (exit 1), got %v", r)
		}
		if r := runEnv(t, Env{}, "health", "--dsn", b.dsn, "--layout=table"); r.code != ExitFailure || !strings.Contains(r.stdout, "failure_rate") {
			t.Errorf("health on the events table alone: want the failure-rate alert (its one outcome failed), got %v", r)
		}
		for _, layout := range [][]string{{"--layout=log"}, nil} { // without --layout: the store has a log
			if r := runEnv(t, Env{}, append([]string{"health", "--dsn", b.dsn}, layout...)...); r.code != 0 ||
				!strings.Contains(r.stdout, "failure rate 3.3% over the last 15m; 0 waiting on the log, oldest -; 29 delivered from the log") {
				t.Errorf("health %v: want healthy at 3.3%% with the log's 29 deliveries, got %v", layout, r)
			}
		}
		r := runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log", "--json")
		var st struct {
			Recent struct{ Completed, Failed int }
			Log    struct {
				DeliveredInWindow *int64 `json:"delivered_in_window"`
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || st.Recent.Completed != 29 || st.Recent.Failed != 1 ||
			st.Log.DeliveredInWindow == nil || *st.Log.DeliveredInWindow != 29 {
			t.Errorf("stats --layout=log --json: want 29 completed (all from the log), 1 failed, log.delivered_in_window 29 (%v), got %v", err, r)
		}
		r = runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log")
		if r.code != 0 || !strings.Contains(r.stdout, "last 15m: 29 completed · 1 failed (retrying) · 0 given up · failure rate 3.3%\n") ||
			!strings.Contains(r.stdout, "\non the log: 29 delivered in the last 15m (in the completed above)\n") {
			t.Errorf("stats --layout=log: want the window with the log's deliveries, and them on the log's line, got %v", r)
		}
	})
}

// ls --layout=log lists what waits on the log for a cursor, in its read order, with
// the events table's columns and JSON (pending), up to --limit, creating no cursor;
// nothing once relay --layout=log has delivered it; and refuses the filters the log
// cannot answer, and MySQL.
func TestLsListsWhatWaitsOnTheLog(t *testing.T) {
	t.Parallel()
	if r := runEnv(t, Env{}, "ls", "--dsn", "mysql://app@127.0.0.1:1/app", "--layout=log"); r.code != ExitUsage ||
		!strings.Contains(r.stderr, "MySQL and MariaDB keep the table layout") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("ls --layout=log on MySQL: want exit 2, once, got %v", r)
	}
	none := "sqlite:" + t.TempDir() + "/none.db"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "failed"}, "--status failed with --layout=log: what waits on the log is pending"},
		{[]string{"--status", "given-up"}, "--status given-up with --layout=log"},
		{[]string{"--stuck"}, "--stuck with --layout=log: the log holds no leases"},
		{[]string{"--blocked"}, "--blocked with --layout=log: the events blocked behind a given-up event are in the events table"},
		{[]string{"--after", "5"}, "--after with --layout=log: the log is listed in the order its cursor reads it"},
		{[]string{"--type", "order.created"}, "--type with --layout=log: the log is listed in the order its cursor reads it"},
		{[]string{"--user", "u"}, "--user with --layout=log: the event log is not kept by user"},
		{[]string{"--log-cursor", "a", "--log-cursor", "b"}, "--log-cursor is given 2 times: ls lists what waits for one cursor"},
		{[]string{"--log-cursor", ""}, "--log-cursor: a cursor's name must not be empty"},
		{[]string{"--limit", "0"}, "--limit must be positive"},
	} {
		args := append([]string{"ls", "--dsn", none, "--layout=log"}, tc.args...)
		if r := runEnv(t, Env{}, args...); r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ls --layout=log %v: want exit 2 saying %q, got %v", tc.args, tc.want, r)
		}
	}
	if r := runEnv(t, Env{}, "ls", "--dsn", none, "--log-cursor", "relay"); r.code != ExitUsage || !strings.Contains(r.stderr, "--log-cursor is for --layout=log") {
		t.Errorf("ls --log-cursor without --layout=log: want exit 2, got %v", r)
	}
	if r := runEnv(t, Env{}, "ls", "--dsn", none, "--layout=logs"); r.code != ExitUsage || !strings.Contains(r.stderr, `--layout "logs": want table or log`) {
		t.Errorf("ls --layout=logs: want exit 2, got %v", r)
	}

	type lsJSON struct {
		ID       string        `json:"id"`
		Type     string        `json:"type"`
		EntityID string        `json:"entity_id"`
		Key      string        `json:"ordering_key"`
		Status   outbox.Status `json:"status"`
		GivenUp  *bool         `json:"given_up"`
	}
	lsLog := func(t *testing.T, args ...string) []lsJSON {
		t.Helper()
		r := runEnv(t, Env{}, append([]string{"ls", "--layout=log", "--json"}, args...)...)
		var out []lsJSON
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 || out == nil {
			t.Fatalf("ls --layout=log --json %v: want a JSON list (%v), got %v", args, err, r)
		}
		return out
	}
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--layout=log"); r.code != ExitFailure || !strings.Contains(r.stderr, "run 'outbox migrate --layout=log'") {
			t.Errorf("ls --layout=log before the log is migrated: want exit 1 naming the command, got %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--layout=log"); r.code != 0 || r.stdout != "nothing waits on the log for cursor relay\n" {
			t.Errorf("ls --layout=log on an empty log: got %v", r)
		}
		r := runEnv(t, Env{Stdin: strings.NewReader(`{"type":"order.created","entity_id":"o-1","ordering_key":"o-1"}
{"type":"order.paid","entity_id":"o-1","ordering_key":"o-1"}
{"type":"invoice.sent","entity_id":"i-1"}
`)}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl")
		appended := ids(r)
		if r.code != 0 || len(appended) != 3 {
			t.Fatalf("enqueue --layout=log: want three IDs, got %v", r)
		}
		got := lsLog(t, "--dsn", b.dsn)
		if len(got) != 3 {
			t.Fatalf("ls --layout=log --json: %+v, want the 3 appended", got)
		}
		for i, e := range got {
			if e.ID != appended[i] || e.Status != outbox.StatusPending || e.GivenUp == nil || *e.GivenUp {
				t.Errorf("ls --layout=log --json, event %d: %+v, want %s, pending, given_up false", i, e, appended[i])
			}
		}
		if got[0].Type != "order.created" || got[1].Type != "order.paid" || got[0].Key != "o-1" || got[2].EntityID != "i-1" {
			t.Errorf("ls --layout=log --json: %+v, want the events as appended", got)
		}
		if got := lsLog(t, "--dsn", b.dsn, "--limit", "2"); len(got) != 2 || got[1].ID != appended[1] {
			t.Errorf("ls --layout=log --limit 2: %+v, want the first 2", got)
		}
		if got := lsLog(t, "--dsn", b.dsn, "--log-cursor", "invoices", "--status", "pending"); len(got) != 3 {
			t.Errorf("ls --layout=log --log-cursor invoices (no relay has run with it): %+v, want the whole log", got)
		}
		r = runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--layout=log")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "SEQ ") || strings.Count(r.stdout, " pending ") != 3 {
			t.Errorf("ls --layout=log: want the events table's columns, 3 pending, got %v", r)
		}
		for _, id := range appended {
			if !strings.Contains(r.stdout, id) {
				t.Errorf("ls --layout=log does not list %s: %v", id, r)
			}
		}

		sink := newAcceptAll(t)
		if r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--layout=log", "--sink", sink.srv.URL, "--once"); r.code != 0 {
			t.Fatalf("relay --layout=log --once: %v", r)
		}
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--layout=log"); r.code != 0 || r.stdout != "nothing waits on the log for cursor relay\n" {
			t.Errorf("ls --layout=log after the relay: want nothing, got %v", r)
		}
		if got := lsLog(t, "--dsn", b.dsn); len(got) != 0 {
			t.Errorf("ls --layout=log --json after the relay: %+v, want []", got)
		}
		if b.name == "sqlite" {
			// --once trimmed the log up to the relay's cursor, all but the row at it: had
			// a listing made the cursor invoices, at the start, it would have held all
			// three.
			if got := lsLog(t, "--dsn", b.dsn, "--log-cursor", "invoices"); len(got) != 1 || got[0].ID != appended[2] {
				t.Errorf("ls --layout=log --log-cursor invoices after the trim: %+v, want the last row only (the listings made no cursor)", got)
			}
		}
	})
}

// Without --layout, relay, stats, health, serve and migrate take the layout from the
// store: the table while it has no log, the log once it has one, so that a relay or a
// health check started without the flag cannot leave the log's events unseen, and an
// upgrade's migrate keeps the log at the version its relays need. --user, and a
// relay's --type without a cursor of its own, keep the table as before; --log-cursor
// asks for the log, and is refused, naming the migration, where there is none;
// --layout=table keeps the events table alone.
func TestLayoutComesFromTheStore(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		sink := newAcceptAll(t)
		relayOnce := func(more ...string) result {
			return runEnv(t, Env{}, append([]string{"relay", "--dsn", b.dsn, "--sink", sink.srv.URL, "--once"}, more...)...)
		}
		const logLine = "on the log (not counted above)"

		// No log yet: the table, and the log's flags refused naming its migration.
		if r := runEnv(t, Env{}, "stats", "--dsn", b.dsn); r.code != 0 || strings.Contains(r.stdout, logLine) {
			t.Errorf("stats, no log: want the table alone, got %v", r)
		}
		if r := relayOnce(); r.code != 0 || strings.Contains(r.stdout, "from the log") {
			t.Errorf("relay, no log: want the table alone, got %v", r)
		}
		if r := runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--log-cursor", "relay"); r.code == 0 ||
			!strings.Contains(r.stderr, "outbox migrate --layout=log") {
			t.Errorf("stats --log-cursor, no log: want a failure naming the migration, got %v", r)
		}

		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 || strings.Contains(r.stdout, "the log") {
			t.Errorf("migrate, no log: want the events table alone, got %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		// migrate without --layout now migrates the log too, so that an upgrade's
		// migrate keeps it at the version the relays need.
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "the log") || strings.Count(r.stdout, "is up to date\n") != 2 {
			t.Errorf("migrate, the store has a log: want the table and the log up to date, got %v", r)
		}
		// The store has a log: without --layout, the log, for enqueue too.
		if r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--type", "order.created", "--entity", "o-1"); r.code != 0 {
			t.Fatalf("enqueue: %v", r)
		}
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("ls --json after enqueue on a store with a log: want the events table empty, got %v", r)
		}
		for _, cmd := range []string{"stats", "health"} {
			if r := runEnv(t, Env{}, cmd, "--dsn", b.dsn, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"log"`) {
				t.Errorf("%s --json, the store has a log: want its log object, got %v", cmd, r)
			}
		}
		for _, args := range [][]string{{"--user", "alice"}, {"--layout=table"}} {
			if r := runEnv(t, Env{}, append([]string{"stats", "--dsn", b.dsn}, args...)...); r.code != 0 || strings.Contains(r.stdout, logLine) {
				t.Errorf("stats %v: want the events table alone, got %v", args, r)
			}
		}
		if r := relayOnce("--type", "order.created"); r.code != 0 || strings.Contains(r.stdout, "from the log") || sink.count() != 0 {
			t.Errorf("relay --type without --log-cursor: want the table alone (nothing delivered), got %v and %d deliveries", r, sink.count())
		}
		if r := relayOnce(); r.code != 0 || !strings.Contains(r.stdout, "read 1 events from the log: 1 delivered") || sink.count() != 1 {
			t.Errorf("relay, the store has a log: want the log's event delivered, got %v and %d deliveries", r, sink.count())
		}
		if r := runEnv(t, Env{}, "stats", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "on the log (not counted above): 0 waiting") {
			t.Errorf("stats after the relay: want nothing waiting on the log, got %v", r)
		}
	})
}

// A new outbox on PostgreSQL or SQLite is made on the log layout, and the commands
// then take the log from the store: enqueue appends to it, ls --layout=log lists it,
// and the relay delivers it. --layout=table makes the events table alone (the end to
// end test), and MySQL keeps the table (TestMySQLMigrateStatsRetry).
func TestANewOutboxIsMadeOnTheLogLayout(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn)
		if r.code != 0 || !strings.Contains(r.stdout, "a new outbox, made on the log layout") || !strings.Contains(r.stdout, "the log") {
			t.Fatalf("migrate of a new outbox: want the log layout, got %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 || strings.Contains(r.stdout, "a new outbox") || strings.Count(r.stdout, "is up to date\n") != 2 {
			t.Errorf("second migrate: want the table and the log up to date, got %v", r)
		}
		r = runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--type", "order.created", "--entity", "o-1")
		if r.code != 0 || len(ids(r)) != 1 {
			t.Fatalf("enqueue: %v", r)
		}
		id := ids(r)[0]
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("ls --json: want the events table empty, got %v", r)
		}
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn); r.code != 0 || !strings.Contains(r.stdout, "what waits on the log: outbox ls --layout=log") {
			t.Errorf("ls, nothing in the events table: want it to say where the log's events are listed, got %v", r)
		}
		if r := runEnv(t, Env{}, "ls", "--dsn", b.dsn, "--layout=log"); r.code != 0 || !strings.Contains(r.stdout, id) {
			t.Errorf("ls --layout=log: want the event on the log, got %v", r)
		}
		sink := newAcceptAll(t)
		if r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--sink", sink.srv.URL, "--once"); r.code != 0 ||
			!strings.Contains(r.stdout, "read 1 events from the log: 1 delivered") || sink.count() != 1 {
			t.Errorf("relay --once: want the log's event delivered, got %v and %d deliveries", r, sink.count())
		}
		if b.name != "postgres" {
			return
		}
		// An events table named so long that its log's name would be too long: refused
		// before anything is made, naming both ways out.
		long := b.dsn + "&table=" + strings.Repeat("t", 43)
		r = runEnv(t, Env{}, "migrate", "--dsn", long)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "a new outbox is made on the log layout") ||
			!strings.Contains(r.stderr, "shorten table=") || !strings.Contains(r.stderr, "--layout=table") {
			t.Errorf("migrate of a new outbox whose log's name is too long: want exit 2 naming both ways out, got %v", r)
		}
		if r := runEnv(t, Env{}, "stats", "--dsn", long); r.code == 0 || !strings.Contains(r.stderr, "not migrated") {
			t.Errorf("stats after the refused migrate: want the outbox not migrated (nothing made), got %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", long, "--layout=table"); r.code != 0 || strings.Contains(r.stdout, "log") {
			t.Errorf("migrate --layout=table: want the events table alone, got %v", r)
		}
	})
}

// A signal that comes right after the relay's start, before the log relay's goroutine
// has begun Run, stops the relay all the same. Before, the stop found no Run going and
// returned, and the Run begun after it went on for good: the relay never exited
// (TestBinaryExitsCleanlyOnSIGTERM, which signals as soon as the relay says it
// started, hung so once the log became the default).
func TestLogRelayStopsOnASignalBeforeItsRunBegins(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != 0 {
		t.Fatalf("migrate: %v", r)
	}
	sink := newAcceptAll(t)
	gate := make(chan struct{})
	// The log relay's Run begins only once the signal's stop has returned.
	env := Env{beforeLogRun: func() { <-gate }, afterLogStop: func() { close(gate) }}
	d := startRelay(t, env, "--dsn", b.dsn, "--sink", sink.srv.URL)
	if r := d.stop(t); r.code != 0 || !strings.Contains(r.stderr, "relay stopped") {
		t.Errorf("relay after the signal: want it stopped, exit 0, got %v", r)
	}
}
