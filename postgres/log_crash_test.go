package postgres_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The log relay's crash test (issue 24): relay processes die by SIGKILL while they
// deliver, from the log and from the events table, and the survivors take over.
//
// The test binary runs itself again as the relay processes: a child is this test with
// logCrashChildEnv set to its name. TestMain belongs to relay_test.go, so the test
// function itself tells the roles apart.

const (
	logCrashChildEnv    = "OUTBOX_LOG_CRASH_CHILD"    // the child's name; unset in the parent
	logCrashSchemaEnv   = "OUTBOX_LOG_CRASH_SCHEMA"   // the schema holding the log and the events table
	logCrashReceiverEnv = "OUTBOX_LOG_CRASH_RECEIVER" // the parent's receiver
	logCrashBatchEnv    = "OUTBOX_LOG_CRASH_BATCH"    // set: the child delivers through a BatchHandler
	// logCrashEventsEnv scales the test: how many events the writers commit.
	logCrashEventsEnv = "OUTBOX_LOG_CRASH_EVENTS"
)

const (
	logCrashEvents    = 2_000 // committed events by default; logCrashEventsEnv changes it
	logCrashRelays    = 3     // relay processes at once: after a kill, two go on while a third starts
	logCrashBatchSize = 16    // events per step, small so that kills land mid-batch
	logCrashFailPct   = 3     // the receiver refuses this share of attempts: they move to the events table
	logCrashKillEvery = 100   // accepted deliveries between kills, on average
	logCrashBacklog   = 300   // writers wait while more committed events than this are undelivered
	logCrashWriters   = 4
	logCrashKeys      = 6 // ordering keys per writer; a writer owns its keys, so their append order is its own
	// logCrashShards: the relays share the log's shards, several delivering at once,
	// each shard by one at a time.
	logCrashShards      = 4
	logCrashConcurrency = 2 // shards a relay process steps at once
	// logCrashAppPrefix starts the application_name of a relay process's sessions.
	logCrashAppPrefix = "outbox_log_crash_"
)

// logCrashEvent is an event as the receiver sees it.
type logCrashEvent struct {
	ID     string `json:"id"`
	Key    string `json:"key,omitempty"`
	Entity string `json:"entity"`
}

// logCrashRequest is one delivery call of a child: one event (a Handler) or one per
// key (a BatchHandler). The answer is one error text per event, empty when accepted.
type logCrashRequest struct {
	Child  string          `json:"child"`
	Source string          `json:"source"` // "log" (the LogRelay) or "table" (the Processor)
	Events []logCrashEvent `json:"events"`
}

// TestLogRelaySurvivesSIGKILL: three relay processes, each a LogRelay on the log and a
// Processor on the events table, deliver to a receiver that refuses 3 % of attempts,
// while writers append. The log has four shards, which the relays share: several
// deliver from the log at once, each shard one relay at a time. Every logCrashKillEvery deliveries or so the receiver has a
// relay SIGKILLed, in turn the one whose delivery from the log it is answering, a
// random one, and the one whose delivery from the events table it is answering, each
// before it hears the answer; a new relay replaces it. Once the survivors have drained:
// every committed event was delivered, no rolled-back one was, each key's first
// deliveries came in append order, and the events table holds nothing unfinished.
func TestLogRelaySurvivesSIGKILL(t *testing.T) {
	if name := os.Getenv(logCrashChildEnv); name != "" {
		runLogCrashChild(t, name)
		return
	}
	t.Parallel()
	events := logCrashEvents
	if v := os.Getenv(logCrashEventsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number of events", logCrashEventsEnv, v)
		}
		events = n
	}
	pool := newPool(t, logCrashWriters+2, "")
	schema := freshSchema(t, pool)
	store := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	l := newShardedLogIn(t, pool, schema, logCrashShards)
	// A guard against a hung run, not an expectation: a minute, and more for more events.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(events)*10*time.Millisecond)
	defer cancel()

	sup := &logCrashSupervisor{t: t, live: map[string]*logCrashChild{}, nextKillAt: logCrashKillEvery}
	rec := &logCrashReceiver{sup: sup, seen: map[string]bool{}, progress: make(chan struct{})}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	sup.env = append(os.Environ(), logCrashSchemaEnv+"="+schema, logCrashReceiverEnv+"="+srv.URL)
	t.Cleanup(sup.killAll) // before the schema is dropped (cleanups run last first)
	start := time.Now()
	for range logCrashRelays {
		sup.start()
	}

	// Writers append transactions of 1–5 events, and roll back one in ten, while the
	// receiver kills relays.
	book := &logCrashBook{keyOrder: map[string][]string{}, committed: map[string]logCrashEvent{}, rolledBack: map[string]bool{}}
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan int, 1)
	go func() { sampled <- logCrashHolders(sampling, pool, l) }()
	var writers sync.WaitGroup
	for w := range logCrashWriters {
		share := events / logCrashWriters
		if w < events%logCrashWriters {
			share++
		}
		writers.Go(func() {
			if err := logCrashWrite(ctx, l, pool, book, rec, w, share); err != nil {
				t.Errorf("writer %d: %v", w, err)
				cancel()
			}
		})
	}
	writers.Wait()
	stopSampling()
	together := <-sampled
	if t.Failed() {
		t.FailNow()
	}
	appended := time.Since(start)
	sup.stopKilling()

	// The survivors drain, until the relay's cursor is at the end of the log (so no
	// step has a batch in flight) and then the events table holds nothing unfinished
	// (nothing moves there once the cursor is at the end). By then every committed
	// event must have been delivered: what is missing now is lost.
	committed := book.count()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !logCrashDrained(ctx, t, l, store) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			_, distinct := rec.progressNow()
			st, _ := store.Stats(context.Background(), outbox.StatsQuery{Now: time.Now()})
			t.Fatalf("not drained before the deadline: %d of %d committed events delivered; events table %+v", distinct, committed, st)
		}
	}
	drained := time.Since(start)
	sup.stop()
	if !logCrashDrained(ctx, t, l, store) {
		t.Fatal("the relays moved something while they stopped")
	}

	// What the receiver got, in order of arrival.
	rec.mu.Lock()
	got := rec.got
	attempts, refused := rec.attempts, rec.refused
	rec.mu.Unlock()
	fromLog, fromTable, takeovers, redeliveries := 0, 0, 0, 0
	lastLogChild := ""
	seen := map[string]bool{}
	firsts := map[string][]logCrashDelivery{} // by key, in order of first delivery
	var complaints logCrashComplaints
	for _, d := range got {
		if d.Source == "log" {
			fromLog++
			if lastLogChild != "" && d.Child != lastLogChild {
				takeovers++
			}
			lastLogChild = d.Child
		} else {
			fromTable++
		}
		want, ok := book.committed[d.ID]
		switch {
		case book.rolledBack[d.ID]:
			complaints.add(t, "rolled-back event %s (%s) delivered from the %s by %s", d.ID, d.Entity, d.Source, d.Child)
		case !ok:
			complaints.add(t, "unknown event %s (%s) delivered from the %s by %s", d.ID, d.Entity, d.Source, d.Child)
		case want != d.logCrashEvent:
			complaints.add(t, "event %s delivered as %+v, appended as %+v", d.ID, d.logCrashEvent, want)
		}
		if seen[d.ID] {
			redeliveries++
			continue
		}
		seen[d.ID] = true
		if ok && want.Key != "" {
			firsts[want.Key] = append(firsts[want.Key], d)
		}
	}
	missing := 0
	for id, e := range book.committed {
		if !seen[id] {
			missing++
			complaints.add(t, "committed event %s (%s) never delivered", id, e.Entity)
		}
	}
	// Per key, first deliveries in append order: the i-th first delivery of a key is
	// its i-th event, so no event went out before every earlier one of its key had.
	for key, want := range book.keyOrder {
		got := firsts[key]
		for i, id := range want {
			if i >= len(got) {
				break // never delivered: reported above
			}
			if got[i].ID != id {
				complaints.add(t, "key %s: %s (event %d of the key) delivered from the %s by %s before %s (event %d) had been delivered",
					key, got[i].Entity, slices.Index(want, got[i].ID), got[i].Source, got[i].Child, book.committed[id].Entity, i)
				break
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d committed events never delivered", missing, committed)
	}
	complaints.summary(t)

	moved := tableEvents(t, store)
	failedHere := 0
	for _, e := range moved {
		if e.Status != outbox.StatusCompleted {
			t.Errorf("event %s is %s in the events table, want completed", e.EntityID, e.Status)
		}
		if len(e.Errors) > 0 && e.Errors[0].Attempt == 1 && e.Errors[0].Error == logCrashRefusal {
			failedHere++ // refused when the relay delivered it from the log
		}
	}
	k := sup.report()
	t.Logf("%d events committed (%d rolled back) by %d writers on %d keys in %s; drained in %s",
		committed, len(book.rolledBack), logCrashWriters, logCrashWriters*logCrashKeys, appended.Round(time.Millisecond), drained.Round(time.Millisecond))
	t.Logf("kills: %d (%d mid-delivery from the log, %d mid-delivery from the events table, %d of a random relay); %d relay processes started; fewer than 2 relays ready for %s of the run",
		k.kills, k.midLog, k.midTable, k.random, k.started, k.thin.Round(time.Millisecond))
	t.Logf("receiver: %d attempts, %d refused, %d accepted (%d from the log, %d from the events table), %d redeliveries; delivery from the log changed relays %d times",
		attempts, refused, len(got), fromLog, fromTable, redeliveries, takeovers)
	t.Logf("moved to the events table: %d (%d refused from the log, %d behind an earlier event of their key)", len(moved), failedHere, len(moved)-failedHere)
	t.Logf("relay processes holding a shard of the log at the same moment: at most %d (sampled while the writers appended)", together)
	if together < 2 {
		t.Error("no two relay processes were seen holding shards at once: the shards were not shared")
	}
	if k.midLog == 0 {
		t.Error("no relay was killed mid-delivery from the log: the test did not test what it names")
	}
	if failedHere == 0 || fromTable == 0 {
		t.Error("no event moved to the events table and was delivered from there: the test did not exercise the move")
	}
}

// logCrashHolders samples, until ctx ends, how many relay processes hold a shard of the
// log at once (the relays' advisory locks keyed by the cursors table, log_relay.go; a
// process's sessions carry its name), and returns the most it saw.
func logCrashHolders(ctx context.Context, pool *pgxpool.Pool, l *postgres.Log) int {
	cursors := pgx.Identifier{l.Config().Schema, l.Config().Table + "_cursors"}.Sanitize()
	most := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(DISTINCT a.application_name) FROM pg_locks k
			JOIN pg_stat_activity a ON a.pid = k.pid
			WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
				AND k.classid::bigint = (hashtext($1)::bigint & 4294967295)
				AND a.application_name LIKE $2`, cursors, logCrashAppPrefix+"%").Scan(&n); err == nil {
			most = max(most, n)
		}
		select {
		case <-ctx.Done():
			return most
		case <-tick.C:
		}
	}
}

// logCrashComplaints reports the first 20 failures in full and counts the rest.
type logCrashComplaints struct{ n int }

func (c *logCrashComplaints) add(t *testing.T, format string, args ...any) {
	t.Helper()
	if c.n++; c.n <= 20 {
		t.Errorf(format, args...)
	}
}

func (c *logCrashComplaints) summary(t *testing.T) {
	if c.n > 20 {
		t.Errorf("… and %d more", c.n-20)
	}
}

// logCrashDrained tells whether the relay's cursor is at the end of the log in every
// shard and the events table holds nothing unfinished, in that order.
func logCrashDrained(ctx context.Context, t *testing.T, l *postgres.Log, store *postgres.Store) bool {
	t.Helper()
	for s := range l.Config().Shards {
		c, err := l.ShardCursor(ctx, postgres.DefaultLogRelayCursor, s) // loads the stored position
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Read(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) > 0 {
			return false
		}
	}
	st, err := store.Stats(ctx, outbox.StatsQuery{Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return st.Pending+st.Processing+st.Failed+st.GivenUp == 0
}

// logCrashBook is what the writers committed and rolled back.
type logCrashBook struct {
	mu         sync.Mutex
	keyOrder   map[string][]string // by key: event IDs in append order
	committed  map[string]logCrashEvent
	rolledBack map[string]bool
}

func (b *logCrashBook) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.committed)
}

// logCrashWrite appends n committed events for writer w, in transactions of 1–5, one
// in ten rolled back, waiting while the backlog is long.
func logCrashWrite(ctx context.Context, l *postgres.Log, pool *pgxpool.Pool, book *logCrashBook, rec *logCrashReceiver, w, n int) error {
	next := 0 // the writer's count of events appended, for entity names
	for done := 0; done < n; {
		for {
			progress, distinct := rec.progressNow()
			if book.count()-distinct <= logCrashBacklog {
				break
			}
			select {
			case <-progress:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		size := min(1+rand.N(5), n-done)
		events := make([]*outbox.Event, size)
		for i := range events {
			key := ""
			if k := rand.N(logCrashKeys + 1); k < logCrashKeys { // one in logCrashKeys+1 has no key
				key = fmt.Sprintf("w%dk%d", w, k)
			}
			events[i] = outbox.NewEvent("order.created", fmt.Sprintf("w%d-%d", w, next), "user-"+strconv.Itoa(w))
			events[i].OrderingKey = key
			next++
		}
		rollBack := rand.N(10) == 0
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		if err := l.AppendTx(ctx, tx, events...); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		if rollBack {
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
		} else if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("commit (whether it took effect is unknown, which the test cannot judge): %w", err)
		}
		book.mu.Lock()
		for _, e := range events {
			if rollBack {
				book.rolledBack[e.ID] = true
				continue
			}
			book.committed[e.ID] = logCrashEvent{ID: e.ID, Key: e.OrderingKey, Entity: e.EntityID}
			if e.OrderingKey != "" {
				book.keyOrder[e.OrderingKey] = append(book.keyOrder[e.OrderingKey], e.ID)
			}
		}
		book.mu.Unlock()
		if !rollBack {
			done += size
		}
	}
	return nil
}

// logCrashRefusal is the error the receiver answers for the attempts it refuses.
const logCrashRefusal = "receiver: 503 Service Unavailable (refused on purpose)"

// logCrashDelivery is one accepted delivery.
type logCrashDelivery struct {
	logCrashEvent
	Child, Source string
}

// logCrashReceiver is the destination: it records what it accepts in order of arrival,
// refuses logCrashFailPct of the attempts, and has the supervisor kill relays as
// deliveries arrive.
type logCrashReceiver struct {
	sup      *logCrashSupervisor
	mu       sync.Mutex
	got      []logCrashDelivery
	seen     map[string]bool
	attempts int
	refused  int
	progress chan struct{} // closed (and replaced) when an event is delivered the first time
}

// progressNow returns a channel closed at the next first delivery, and how many
// distinct events have been delivered.
func (r *logCrashReceiver) progressNow() (<-chan struct{}, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress, len(r.seen)
}

func (r *logCrashReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var in logCrashRequest
	if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	answers := make([]string, len(in.Events))
	r.mu.Lock()
	fresh := false
	for i, e := range in.Events {
		r.attempts++
		if rand.N(100) < logCrashFailPct {
			r.refused++
			answers[i] = logCrashRefusal
			continue
		}
		r.got = append(r.got, logCrashDelivery{logCrashEvent: e, Child: in.Child, Source: in.Source})
		if !r.seen[e.ID] {
			r.seen[e.ID] = true
			fresh = true
		}
	}
	if fresh {
		close(r.progress)
		r.progress = make(chan struct{})
	}
	accepted := len(r.got)
	r.mu.Unlock()
	// The events are delivered; the sender may die before it hears so.
	r.sup.delivered(accepted, in.Child, in.Source)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answers)
}

// logCrashChild is one relay process.
type logCrashChild struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *logCrashBuffer
	ready  bool // said so on stdout (under the supervisor's mu)
	killed bool // by the supervisor (under its mu)
}

// logCrashSupervisor starts relay processes, kills them as deliveries arrive, and
// starts a replacement for each one it kills.
type logCrashSupervisor struct {
	t   *testing.T
	env []string
	wg  sync.WaitGroup // the children's waiters

	mu         sync.Mutex
	live       map[string]*logCrashChild
	started    int
	killing    bool // false once the writers are done
	stopping   bool
	nextKillAt int // the receiver's accepted count at which the next kill is due
	k          logCrashKills
	ready      int       // live children ready
	readySince time.Time // when ready last changed
}

type logCrashKills struct {
	kills, midLog, midTable, random, started int
	thin                                     time.Duration // while killing, time with fewer than 2 ready
}

func (s *logCrashSupervisor) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked()
}

func (s *logCrashSupervisor) startLocked() {
	t := s.t
	name := fmt.Sprintf("relay-%d", s.started)
	env := append(s.env, logCrashChildEnv+"="+name)
	if s.started%2 == 1 {
		env = append(env, logCrashBatchEnv+"=1") // every other relay delivers through a BatchHandler
	}
	s.started++
	if s.started == 1 {
		s.killing = true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogRelaySurvivesSIGKILL$")
	cmd.Env = env
	c := &logCrashChild{name: name, cmd: cmd, stderr: &logCrashBuffer{}}
	cmd.Stderr = c.stderr
	// Errorf, not Fatal: the receiver's goroutines start replacements.
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Errorf("start %s: %v", name, err)
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Errorf("start %s: %v", name, err)
		return
	}
	if err := cmd.Start(); err != nil {
		t.Errorf("start %s: %v", name, err)
		return
	}
	s.live[name] = c
	s.wg.Go(func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if lines.Text() != "ready" {
				fmt.Fprintln(c.stderr, lines.Text()) // the child's test output, shown if it fails
				continue
			}
			s.mu.Lock()
			if !c.killed {
				c.ready = true
				s.readyChanged(+1)
			}
			s.mu.Unlock()
		}
		err := cmd.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.live, name)
		switch {
		case c.killed:
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("%s: killed, but it ended with %v", name, err)
			}
		case !s.stopping || err != nil:
			t.Errorf("%s ended by itself (%v); its stderr:\n%s", name, err, c.stderr)
		}
		if c.ready && !c.killed {
			s.readyChanged(-1)
		}
	})
}

// readyChanged counts a child becoming ready (+1) or going (-1), and the time spent
// with fewer than two ready while relays are killed, from when two first were; s.mu is
// held.
func (s *logCrashSupervisor) readyChanged(d int) {
	now := time.Now()
	if s.killing && !s.readySince.IsZero() && s.ready < 2 {
		s.k.thin += now.Sub(s.readySince)
	}
	s.ready += d
	if s.ready >= 2 || !s.readySince.IsZero() {
		s.readySince = now
	}
}

// delivered is told of each delivery call the receiver accepted something of, with the
// receiver's count of accepted deliveries, before the sender hears the answer. When a
// kill is due, and every live relay is ready (so that two remain), it kills a relay:
// in turn the sender of a delivery from the log, a random one, and the sender of a
// delivery from the events table. A kill that has waited a further logCrashKillEvery
// deliveries for its kind of sender takes this one.
func (s *logCrashSupervisor) delivered(accepted int, sender, source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.killing || accepted < s.nextKillAt || s.ready < len(s.live) {
		return
	}
	late := accepted >= s.nextKillAt+logCrashKillEvery
	var victim *logCrashChild
	kind := s.k.kills % 3
	switch {
	case kind == 1:
		i := rand.N(len(s.live))
		for _, c := range s.live {
			if i--; i < 0 {
				victim = c
				break
			}
		}
	case kind == 0 && source == "log", kind == 2 && source == "table", late:
		victim = s.live[sender] // nil when the sender was already killed: its request was in flight
	}
	if victim == nil {
		return
	}
	victim.killed = true
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Errorf("kill %s: %v", victim.name, err)
	}
	if victim.ready {
		s.readyChanged(-1)
	}
	delete(s.live, victim.name)
	s.k.kills++
	switch {
	case kind == 1:
		s.k.random++
	case source == "log":
		s.k.midLog++
	default:
		s.k.midTable++
	}
	s.nextKillAt = accepted + logCrashKillEvery/2 + rand.N(logCrashKillEvery)
	s.startLocked()
}

func (s *logCrashSupervisor) stopKilling() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readyChanged(0)
	s.killing = false
}

// stop asks the live relays to stop (their stdin closes), and waits for them.
func (s *logCrashSupervisor) stop() {
	s.mu.Lock()
	s.killing, s.stopping = false, true
	for _, c := range s.live {
		_ = c.stdin.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		s.t.Error("the relays did not stop within a minute of being asked")
		s.killAll()
	}
}

// killAll kills whatever relay is still running, and waits for them.
func (s *logCrashSupervisor) killAll() {
	s.mu.Lock()
	s.killing, s.stopping = false, true
	for _, c := range s.live {
		c.killed = true
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *logCrashSupervisor) report() logCrashKills {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.k
	k.started = s.started
	return k
}

// logCrashBuffer is a child's stderr.
type logCrashBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logCrashBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logCrashBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logCrashRetry is the relays' and the processors' retry policy: a refused event is
// due again almost at once, and never given up.
var logCrashRetry = outbox.RetryPolicy{Delays: []time.Duration{10 * time.Millisecond}, MaxAttempts: 1000, Jitter: -1}

// runLogCrashChild is a relay process: a LogRelay on the log and a Processor on the
// events table, each delivering to the parent's receiver, until the parent kills it or
// closes its stdin. It prints "ready" once both run.
func runLogCrashChild(t *testing.T, name string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel() // the parent closed it: stop
	}()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("relay", name)
	cfg, err := pgxpool.ParseConfig(os.Getenv("OUTBOX_POSTGRES_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 6 // the relay's shards at once, its head poll, and the Processor
	cfg.ConnConfig.RuntimeParams["application_name"] = logCrashAppPrefix + name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	schema := os.Getenv(logCrashSchemaEnv)
	store, err := postgres.New(ctx, pool, postgres.Config{Schema: schema, DisableListen: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l, err := postgres.NewLog(ctx, pool, postgres.LogConfig{Schema: schema, Shards: logCrashShards})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	handler := func(source string) outbox.Handler {
		s := &logCrashSender{client: client, url: os.Getenv(logCrashReceiverEnv), child: name, source: source}
		if os.Getenv(logCrashBatchEnv) != "" {
			return logCrashBatchSender{s}
		}
		return s
	}
	r, err := postgres.NewLogRelay(ctx, l, store, handler("log"), postgres.LogRelayConfig{
		BatchSize: logCrashBatchSize, MaxConcurrent: 4, PollInterval: 20 * time.Millisecond, Concurrency: logCrashConcurrency,
		LeaseDuration: 5 * time.Second, Retry: logCrashRetry, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The lease bounds how long a killed processor's claimed events wait for another.
	p, err := outbox.NewProcessor(store, handler("table"), outbox.Config{
		BatchSize: logCrashBatchSize, MaxConcurrent: 4, PollInterval: 20 * time.Millisecond,
		LeaseDuration: 2 * time.Second, Retry: logCrashRetry, Owner: name, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	_ = r.Run(ctx)
	stopCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if err := p.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
}

// logCrashSender delivers to the receiver, one event per call.
type logCrashSender struct {
	client             *http.Client
	url, child, source string
}

func (s *logCrashSender) Handle(ctx context.Context, e outbox.Event) error {
	return s.send(ctx, []outbox.Event{e})[0]
}

// logCrashBatchSender delivers a BatchHandler's call in one request.
type logCrashBatchSender struct{ *logCrashSender }

func (b logCrashBatchSender) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	return b.send(ctx, events)
}

func (s *logCrashSender) send(ctx context.Context, events []outbox.Event) []error {
	req := logCrashRequest{Child: s.child, Source: s.source}
	for _, e := range events {
		req.Events = append(req.Events, logCrashEvent{ID: e.ID, Key: e.OrderingKey, Entity: e.EntityID})
	}
	errs := make([]error, len(events))
	every := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	body, err := json.Marshal(req)
	if err != nil {
		return every(err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return every(err)
	}
	resp, err := s.client.Do(hreq)
	if err != nil {
		return every(err)
	}
	defer resp.Body.Close()
	var answers []string
	if resp.StatusCode != http.StatusOK {
		return every(fmt.Errorf("receiver: %s", resp.Status))
	}
	if err := json.NewDecoder(resp.Body).Decode(&answers); err != nil || len(answers) != len(events) {
		return every(fmt.Errorf("receiver: %d answers for %d events: %v", len(answers), len(events), err))
	}
	for i, a := range answers {
		if a != "" {
			errs[i] = errors.New(a)
		}
	}
	return errs
}
