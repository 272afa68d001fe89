package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// The log relay's tests (issue 24): delivery from the log, failures that move to the
// events table with their key's later events, holds on destination faults, one relay
// at a time per cursor, and at least once across crashes. Each test has a schema of
// its own holding both the log and the events table.

// logRelayEnv is a log and a store in one fresh schema.
type logRelayEnv struct {
	pool  *pgxpool.Pool
	log   *postgres.Log
	store *postgres.Store
}

func newLogRelayEnv(t testing.TB, pool *pgxpool.Pool) logRelayEnv {
	t.Helper()
	if pool == nil {
		pool = sharedPool(t)
	}
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	return logRelayEnv{pool: pool, log: newTestLogIn(t, pool, schema), store: s}
}

func (env logRelayEnv) relay(t testing.TB, h outbox.Handler, cfg postgres.LogRelayConfig) *postgres.LogRelay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	r, err := postgres.NewLogRelay(context.Background(), env.log, env.store, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// appendKeyed appends one transaction of events, one per "key/n" name: ordering key
// key, entity the name, payload naming it. A name without a slash has no key.
func appendKeyed(t testing.TB, l *postgres.Log, pool *pgxpool.Pool, names ...string) []*outbox.Event {
	t.Helper()
	events := make([]*outbox.Event, len(names))
	for i, name := range names {
		e := outbox.NewEvent("order.created", name, "user-"+strconv.Itoa(i%3))
		if key, _, ok := strings.Cut(name, "/"); ok {
			e.OrderingKey = key
		}
		e.Payload = []byte(fmt.Sprintf(`{"name": %q}`, name))
		e.Metadata = map[string]string{"source": "test"}
		events[i] = e
	}
	if err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		return l.AppendTx(context.Background(), tx, events...)
	}); err != nil {
		t.Fatal(err)
	}
	return events
}

// logReceiver records what it accepted, in order, and fails as fail says (nil: accept).
type logReceiver struct {
	mu       sync.Mutex
	got      []outbox.Event // accepted, in order
	attempts map[string]int // by entity
	fail     func(e outbox.Event, attempt int) error
	batches  [][]outbox.Event // HandleBatch calls, for logBatchReceiver
}

func (r *logReceiver) Handle(_ context.Context, e outbox.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == nil {
		r.attempts = map[string]int{}
	}
	r.attempts[e.EntityID]++
	if r.fail != nil {
		if err := r.fail(e, r.attempts[e.EntityID]); err != nil {
			return err
		}
	}
	r.got = append(r.got, e)
	return nil
}

func (r *logReceiver) entities() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, e := range r.got {
		out[i] = e.EntityID
	}
	return out
}

// logBatchReceiver is a logReceiver that is a BatchHandler.
type logBatchReceiver struct{ *logReceiver }

func (b logBatchReceiver) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	b.mu.Lock()
	b.batches = append(b.batches, slices.Clone(events))
	b.mu.Unlock()
	errs := make([]error, len(events))
	for i, e := range events {
		errs[i] = b.Handle(ctx, e)
	}
	return errs
}

// checkKeyOrder fails t unless each key's "key/n" entities were accepted in order of n
// (a repeat of an earlier one allowed: at least once), and returns how many distinct
// ones each key had.
func checkKeyOrder(t testing.TB, entities []string) map[string]int {
	t.Helper()
	next := map[string]int{}
	for _, name := range entities {
		key, n, ok := strings.Cut(name, "/")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("entity %q", name)
		}
		switch {
		case i < next[key]: // delivered again
		case i == next[key]:
			next[key]++
		default:
			t.Errorf("key %s: %s delivered before %s/%d", key, name, key, next[key])
			next[key] = i + 1
		}
	}
	return next
}

// tableEvents lists every event of the store's table, in seq order.
func tableEvents(t testing.TB, s *postgres.Store) []outbox.Event {
	t.Helper()
	events, err := s.List(context.Background(), outbox.Filter{Limit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestLogRelayDeliveredEventsStayOutOfTheTable(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("BatchHandler=%v", batch), func(t *testing.T) {
			t.Parallel()
			env := newLogRelayEnv(t, nil)
			ctx := context.Background()
			var names []string
			next := map[int]int{}
			for tx := range 20 {
				names = names[:0]
				for i := range 50 {
					n := tx*50 + i
					if n%10 == 9 {
						names = append(names, fmt.Sprintf("free-%d", n)) // no key
					} else {
						names = append(names, fmt.Sprintf("k%d/%d", n%7, next[n%7]))
						next[n%7]++
					}
				}
				appendKeyed(t, env.log, env.pool, names...)
			}
			rec := &logReceiver{}
			var h outbox.Handler = rec
			if batch {
				h = logBatchReceiver{rec}
			}
			r := env.relay(t, h, postgres.LogRelayConfig{BatchSize: 97, MaxConcurrent: 4})
			st, err := r.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Read != 1000 || st.Delivered != 1000 || st.Failed+st.Waiting+st.Duplicates != 0 || st.Held || st.Busy {
				t.Fatalf("drain: %+v, want 1000 read and delivered, nothing else", st)
			}
			got := rec.entities()
			if len(got) != 1000 {
				t.Fatalf("delivered %d events, want 1000", len(got))
			}
			seen := map[string]bool{}
			for _, e := range got {
				if seen[e] {
					t.Fatalf("%s delivered twice", e)
				}
				seen[e] = true
			}
			counts := checkKeyOrder(t, got)
			for k := range 7 {
				if counts[fmt.Sprintf("k%d", k)] == 0 {
					t.Errorf("key k%d: nothing delivered", k)
				}
			}
			for _, e := range rec.got {
				if e.Attempts != 1 || e.Status != outbox.StatusProcessing || string(e.Payload) != fmt.Sprintf(`{"name": %q}`, e.EntityID) {
					t.Fatalf("handler got %+v", e)
				}
			}
			if batch {
				for _, call := range rec.batches {
					keys := map[string]bool{}
					for _, e := range call {
						if e.OrderingKey != "" && keys[e.OrderingKey] {
							t.Fatalf("one HandleBatch call carried two events of key %s", e.OrderingKey)
						}
						keys[e.OrderingKey] = true
					}
				}
			}
			if events := tableEvents(t, env.store); len(events) != 0 {
				t.Fatalf("the events table holds %d events, want none: delivered events never enter it", len(events))
			}
			// Idle steps write nothing: the cursor's row keeps its version.
			cursors := pgx.Identifier{env.log.Config().Schema, env.log.Config().Table + "_cursors"}.Sanitize()
			version := func() string {
				var v string
				if err := env.pool.QueryRow(ctx, `SELECT xmin::text || ctid::text FROM `+cursors+` WHERE name = $1`,
					postgres.DefaultLogRelayCursor).Scan(&v); err != nil {
					t.Fatal(err)
				}
				return v
			}
			before := version()
			for range 5 {
				if st, err := r.Step(ctx); err != nil || st.Read != 0 {
					t.Fatalf("a step after the drain: %+v, %v; want nothing read", st, err)
				}
			}
			if after := version(); after != before {
				t.Errorf("idle steps rewrote the cursor's row (%s, then %s)", before, after)
			}
		})
	}
}

func TestLogRelayFailureMovesWithItsKey(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	down := atomic.Bool{}
	down.Store(true)
	rec := &logReceiver{fail: func(e outbox.Event, attempt int) error {
		switch {
		case e.EntityID == "a/1" && down.Load():
			return errors.New("receiver answers 500")
		case e.EntityID == "c/0" && attempt == 1:
			return outbox.Permanent(errors.New("receiver answers 422: no such order"))
		}
		return nil
	}}
	retry := outbox.RetryPolicy{Delays: []time.Duration{30 * time.Millisecond}, MaxAttempts: 5, Jitter: -1}
	r := env.relay(t, rec, postgres.LogRelayConfig{Retry: retry})
	written := appendKeyed(t, env.log, env.pool, "a/0", "a/1", "b/0", "a/2", "c/0", "b/1", "x", "c/1")
	before := time.Now()
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 8 || st.Delivered != 4 || st.Failed != 2 || st.Waiting != 2 || st.Held {
		t.Fatalf("step: %+v; want 8 read, 4 delivered (a/0 b/0 b/1 x), 2 failed (a/1 c/0), 2 waiting (a/2 c/1)", st)
	}
	if got := rec.entities(); !sameSet(got, []string{"a/0", "b/0", "b/1", "x"}) {
		t.Fatalf("delivered %v", got)
	}

	// The failed event is in the table as it was written, with its attempt.
	byEntity := map[string]outbox.Event{}
	var order []string
	for _, e := range tableEvents(t, env.store) {
		byEntity[e.EntityID] = e
		order = append(order, e.EntityID)
	}
	if !slices.Equal(order, []string{"a/1", "a/2", "c/0", "c/1"}) {
		t.Fatalf("events table holds %v in seq order, want a/1 a/2 c/0 c/1", order)
	}
	a1, w := byEntity["a/1"], written[1]
	if a1.ID != w.ID || a1.Type != w.Type || a1.UserID != w.UserID || a1.OrderingKey != "a" || string(a1.Payload) != string(w.Payload) ||
		a1.Metadata["source"] != "test" || !a1.CreatedAt.Equal(outbox.Timestamp(w.CreatedAt)) {
		t.Errorf("a/1 in the table: %+v\nwritten: %+v", a1, *w)
	}
	if a1.Status != outbox.StatusFailed || a1.Attempts != 1 || a1.LastError != "receiver answers 500" || len(a1.Errors) != 1 ||
		a1.Errors[0].Attempt != 1 || a1.LastAttemptAt.Before(before.Add(-time.Second)) {
		t.Errorf("a/1's attempt: status %s attempts %d last_error %q errors %+v last_attempt %v", a1.Status, a1.Attempts, a1.LastError, a1.Errors, a1.LastAttemptAt)
	}
	if due := a1.NextAttemptAt.Sub(a1.LastAttemptAt); due < 25*time.Millisecond || due > time.Second {
		t.Errorf("a/1 due %s after its attempt, want the retry policy's 30ms", due)
	}
	if a2 := byEntity["a/2"]; a2.Status != outbox.StatusPending || a2.Attempts != 0 || a2.LastError != "" {
		t.Errorf("a/2 in the table: %+v; want pending, unattempted", a2)
	}
	if c0 := byEntity["c/0"]; !c0.GivenUp() || c0.Attempts != 1 {
		t.Errorf("c/0 (permanent failure): %+v; want given up after 1 attempt", c0)
	}
	blocked, err := env.store.List(ctx, outbox.Filter{Blocked: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(blocked) != 1 || blocked[0].EntityID != "c/1" {
		t.Errorf("blocked events: %v; want c/1, behind the given-up c/0", blocked)
	}

	// Later events: a's join it in the table while it is unfinished; b's go on.
	appendKeyed(t, env.log, env.pool, "a/3", "b/2")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Waiting != 1 {
		t.Fatalf("second step: %+v, %v; want b/2 delivered, a/3 waiting", st, err)
	}
	if got := rec.entities(); got[len(got)-1] != "b/2" {
		t.Fatalf("delivered %v", got)
	}

	// The receiver recovers; today's Processor delivers a's events in order from the
	// table, and an operator's retry brings c's back.
	down.Store(false)
	p, err := outbox.NewProcessor(env.store, rec, outbox.Config{Retry: retry, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	drainTable(t, p, env.store, 2) // c/0 given up, c/1 behind it
	if _, err := env.store.Retry(ctx, time.Now(), outbox.Filter{GivenUp: true}); err != nil {
		t.Fatal(err)
	}
	drainTable(t, p, env.store, 0)

	// Once the table's events of a key are done, the key's new events come from the log.
	appendKeyed(t, env.log, env.pool, "a/4", "c/2")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Waiting+st.Failed != 0 {
		t.Fatalf("step after recovery: %+v, %v; want a/4 and c/2 delivered from the log", st, err)
	}
	got := rec.entities()
	counts := checkKeyOrder(t, got)
	if counts["a"] != 5 || counts["b"] != 3 || counts["c"] != 3 {
		t.Fatalf("delivered %v; want a/0–a/4, b/0–b/2, c/0–c/2 each in order", got)
	}
	for _, e := range tableEvents(t, env.store) {
		if e.Status != outbox.StatusCompleted {
			t.Errorf("%s is %s in the table, want completed", e.EntityID, e.Status)
		}
	}
}

// drainTable runs p until the store's table has at most left unfinished events (the
// given-up ones, say), waiting out retry delays.
func drainTable(t testing.TB, p *outbox.Processor, s *postgres.Store, left int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		unfinished := 0
		for _, e := range tableEvents(t, s) {
			if e.Status != outbox.StatusCompleted {
				unfinished++
			}
		}
		if unfinished <= left {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the events table still has %d unfinished events", unfinished)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestLogRelayDestinationFaultHolds(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	var down atomic.Value // which events meet the outage: "k/3", "all" or ""
	down.Store("k/3")
	rec := &logReceiver{fail: func(e outbox.Event, attempt int) error {
		if d := down.Load().(string); d == "all" || d == e.EntityID {
			return outbox.Unavailable(errors.New("dial tcp 10.0.0.1:443: connect: connection refused"))
		}
		return nil
	}}
	r := env.relay(t, rec, postgres.LogRelayConfig{MaxConcurrent: 1,
		Breaker: outbox.BreakerConfig{Cooldown: 10 * time.Millisecond, MaxCooldown: 40 * time.Millisecond}})
	appendKeyed(t, env.log, env.pool, "k/0", "k/1", "k/2", "k/3", "k/4", "j/0")

	// k/0–k/2 go out, k/3 meets the outage: the batch is held, nothing moves, and the
	// cursor stays, so k/0–k/2 will be delivered again (at least once).
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || !outbox.IsUnavailable(st.Fault) || st.RetryIn != 10*time.Millisecond || st.Delivered != 3 || st.Failed+st.Waiting != 0 {
		t.Fatalf("step: %+v; want held for the unreachable destination after 3 delivered, nothing moved, retry in the cooldown", st)
	}
	if events := tableEvents(t, env.store); len(events) != 0 {
		t.Fatalf("a destination fault moved %d events to the table; want none, and no attempt spent", len(events))
	}
	b, err := logCursor(t, env.log, postgres.DefaultLogRelayCursor).Read(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := logEntities(b.Events); !slices.Equal(got, []string{"k/0", "k/1", "k/2", "k/3", "k/4", "j/0"}) {
		t.Fatalf("the cursor reads %v after the hold; want the whole batch again", got)
	}

	// The whole destination is down: each step probes with one event, and waits twice
	// as long after each hold, up to MaxCooldown.
	down.Store("all")
	for _, want := range []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond} {
		st, err := r.Step(ctx)
		if err != nil || st.Read != 1 || !st.Held || st.RetryIn != want {
			t.Fatalf("probe: %+v, %v; want one event read, held, retry in %s", st, err, want)
		}
	}
	if events := tableEvents(t, env.store); len(events) != 0 {
		t.Fatalf("holds moved %d events to the table; want none", len(events))
	}

	// Back: the probe gets through, then the rest.
	down.Store("")
	if st, err := r.Step(ctx); err != nil || st.Read != 1 || st.Delivered != 1 || st.Held {
		t.Fatalf("probe after recovery: %+v, %v; want one event read and delivered", st, err)
	}
	total, err := r.Drain(ctx)
	if err != nil || total.Held || total.Delivered != 5 || total.Failed+total.Waiting != 0 {
		t.Fatalf("drain after recovery: %+v, %v; want the other 5 delivered", total, err)
	}
	counts := checkKeyOrder(t, rec.entities())
	if counts["k"] != 5 || counts["j"] != 1 {
		t.Fatalf("delivered %v", rec.entities())
	}
	if events := tableEvents(t, env.store); len(events) != 0 {
		t.Fatalf("the events table holds %d events after recovery, want none", len(events))
	}
}

func TestLogRelayOneRelayPerCursor(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, newPool(t, 4, ""))
	ctx := context.Background()
	// Two relays on one cursor, each with its own pool, as two processes; their
	// deliveries must never overlap, and each event is delivered once.
	var mu sync.Mutex
	inFlight := [2]int{}
	delivered := map[string]int{}
	overlaps := 0
	handler := func(me int) outbox.Handler {
		return outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			mu.Lock()
			if inFlight[1-me] > 0 {
				overlaps++
			}
			inFlight[me]++
			delivered[e.EntityID]++
			mu.Unlock()
			time.Sleep(200 * time.Microsecond)
			mu.Lock()
			inFlight[me]--
			mu.Unlock()
			return nil
		})
	}
	relays := make([]*postgres.LogRelay, 2)
	for i := range relays {
		other := logRelayEnv{pool: newPool(t, 2, ""), log: env.log, store: env.store}
		l, err := postgres.NewLog(ctx, other.pool, env.log.Config())
		if err != nil {
			t.Fatal(err)
		}
		other.log = l
		relays[i] = other.relay(t, handler(i), postgres.LogRelayConfig{BatchSize: 50, MaxConcurrent: 4, PollInterval: time.Millisecond})
	}
	const total = 2000
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	steps := [2]atomic.Int64{}
	for i, r := range relays {
		wg.Go(func() {
			for runCtx.Err() == nil {
				st, err := r.Step(runCtx)
				if err != nil && runCtx.Err() == nil {
					t.Error(err)
					return
				}
				if st.Read > 0 {
					steps[i].Add(1)
				} else {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	for n := 0; n < total; n += 20 {
		names := make([]string, 20)
		for i := range names {
			names[i] = fmt.Sprintf("k%d/%d", (n+i)%13, (n+i)/13)
		}
		appendKeyed(t, env.log, env.pool, names...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n == total || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if overlaps > 0 {
		t.Errorf("the two relays delivered at the same time %d times; want never", overlaps)
	}
	if len(delivered) != total {
		t.Fatalf("delivered %d distinct events, want %d", len(delivered), total)
	}
	for e, n := range delivered {
		if n != 1 {
			t.Fatalf("%s delivered %d times, want once (no crash, no fault)", e, n)
		}
	}
	t.Logf("batches delivered: relay 0 %d, relay 1 %d", steps[0].Load(), steps[1].Load())
}

func TestLogRelayCrashRedeliversTheBatch(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	appendKeyed(t, env.log, env.pool, "k/0", "k/1", "k/2", "k/3", "k/4", "k/5", "k/6", "k/7", "k/8", "k/9")

	// The first relay is cancelled while it delivers k/5, after k/0–k/4 went out.
	crashCtx, crash := context.WithCancel(ctx)
	first := &logReceiver{fail: func(e outbox.Event, _ int) error {
		if e.EntityID == "k/5" {
			crash()
			return errors.New("connection reset")
		}
		return nil
	}}
	st, err := env.relay(t, first, postgres.LogRelayConfig{}).Step(crashCtx)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled step: %+v, %v; want context.Canceled", st, err)
	}
	if got := first.entities(); !slices.Equal(got, []string{"k/0", "k/1", "k/2", "k/3", "k/4"}) {
		t.Fatalf("before the crash: %v", got)
	}
	if events := tableEvents(t, env.store); len(events) != 0 {
		t.Fatalf("the interrupted step moved %d events; want none", len(events))
	}
	// A new process (another pool) delivers the whole batch again, k/0–k/4 included.
	other := logRelayEnv{pool: newPool(t, 2, ""), store: env.store}
	l, err := postgres.NewLog(ctx, other.pool, env.log.Config())
	if err != nil {
		t.Fatal(err)
	}
	other.log = l
	second := &logReceiver{}
	if st, err := other.relay(t, second, postgres.LogRelayConfig{}).Drain(ctx); err != nil || st.Delivered != 10 {
		t.Fatalf("after the crash: %+v, %v; want all 10 delivered", st, err)
	}
	if got := second.entities(); len(got) != 10 || len(checkKeyOrder(t, got)) != 1 {
		t.Fatalf("after the crash: %v", got)
	}
}

// TestLogRelayReadUsesTheIndexes: the relay's read (the cursor's, with the lookup of
// the keys in the events table as a column) keeps the cursor's plan, two primary-key
// ranges of each partition merged, and looks in the events table only by its key
// index: the probe for any unfinished keyed event and the probe per event. Custom and
// generic plans, with the table holding unfinished keyed events among many completed
// ones, and with and without SkipGivenUp.
func TestLogRelayReadUsesTheIndexes(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	l := openLog(t, pool, postgres.LogConfig{Schema: schema, PartitionXIDs: 4096})
	r := logRelayEnv{pool: pool, log: l, store: s}.relay(t, &logReceiver{}, postgres.LogRelayConfig{})
	logTable := pgx.Identifier{schema, l.Config().Table}.Sanitize()
	events := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	if _, err := pool.Exec(ctx, `INSERT INTO `+logTable+` (xid, created_at, id, type, entity_id, ordering_key)
		SELECT (3 + i / 2)::text::xid8, now(), gen_random_uuid(), 'order.created', 'e-' || i, 'k-' || i
		FROM generate_series(1, 100000) AS i`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+events+` (id, type, entity_id, status, ordering_key, created_at, updated_at, next_attempt_at)
		SELECT gen_random_uuid(), 'order.created', 't-' || i, CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END,
			'k-' || i, now(), now(), CASE WHEN i % 40 = 0 THEN now() END
		FROM generate_series(1, 50000) AS i`); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{logTable, events} {
		if _, err := pool.Exec(ctx, `ANALYZE `+table); err != nil {
			t.Fatal(err)
		}
	}
	var snapshot string
	if err := pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	for _, read := range []struct {
		name, prev, next, afterXID string
	}{
		{"first read", "1:1:", "", "0"},
		{"a pair going on", "1:1:", snapshot, "1000"},
	} {
		for _, generic := range []bool{false, true} {
			for _, skip := range []bool{false, true} {
				plan, err := r.ExplainRead(ctx, generic, 0, read.prev, read.next, read.afterXID, 0, 1001, skip)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(plan, "Seq Scan") || sortsMoreThanTheProbes(plan) || strings.Contains(plan, "Bitmap") ||
					strings.Count(plan, "Index Scan using outbox_log_p") != 2*l.Config().Partitions || !strings.Contains(plan, "Merge Append") ||
					strings.Count(plan, "Scan using outbox_events_key on outbox_events") != 2 {
					t.Errorf("%s (generic plan: %t, SkipGivenUp: %t): plan\n%s\nwant the cursor's two index scans of each partition, merged, and two probes of the events table's key index",
						read.name, generic, skip, plan)
				}
			}
		}
	}
}

// TestLogRelaySkipGivenUp: a key whose only unfinished event in the events table is
// given up holds the key's later events there, unless SkipGivenUp; a key with an event
// due for retry there holds them either way.
func TestLogRelaySkipGivenUp(t *testing.T) {
	t.Parallel()
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip=%t", skip), func(t *testing.T) {
			t.Parallel()
			env := newLogRelayEnv(t, nil)
			ctx := context.Background()
			rec := &logReceiver{fail: func(e outbox.Event, attempt int) error {
				switch e.EntityID {
				case "g/0":
					return outbox.Permanent(errors.New("receiver answers 422"))
				case "r/0":
					return errors.New("receiver answers 500")
				}
				return nil
			}}
			r := env.relay(t, rec, postgres.LogRelayConfig{SkipGivenUp: skip,
				Retry: outbox.RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAttempts: 5}})
			appendKeyed(t, env.log, env.pool, "g/0", "r/0", "x")
			if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Failed != 2 {
				t.Fatalf("first step: %+v, %v; want x delivered, g/0 and r/0 failed", st, err)
			}
			appendKeyed(t, env.log, env.pool, "g/1", "r/1", "y")
			st, err := r.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := postgres.LogRelayStep{Read: 3, Delivered: 1, Waiting: 2} // g/1 behind g/0, r/1 behind r/0
			if skip {
				want = postgres.LogRelayStep{Read: 3, Delivered: 2, Waiting: 1} // g/1 past the given-up g/0
			}
			if st != want {
				t.Fatalf("second step: %+v; want %+v", st, want)
			}
			wantGot := []string{"x", "y"}
			if skip {
				wantGot = []string{"x", "g/1", "y"}
			}
			if got := rec.entities(); !sameSet(got, wantGot) {
				t.Fatalf("delivered %v, want %v", got, wantGot)
			}
		})
	}
}

// TestLogRelayHoldsNoSnapshotWhileItDelivers: while a step delivers, its transaction
// holds the cursor's lock and nothing else, no transaction ID and no snapshot, without
// a heartbeat's help (the relay is silenced): the step's own round trips dropped the
// read's portal, whether the read went with the lock (warm: the relay stepped before)
// or after it (its first step, which reads from the stored position).
func TestLogRelayHoldsNoSnapshotWhileItDelivers(t *testing.T) {
	t.Parallel()
	for _, warm := range []bool{false, true} {
		t.Run(fmt.Sprintf("warm=%t", warm), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			env := newLogRelayEnv(t, nil)
			app := randomName("relay_")
			l, err := postgres.NewLog(ctx, newPool(t, 2, app), env.log.Config())
			if err != nil {
				t.Fatal(err)
			}
			inside, release := make(chan struct{}), make(chan struct{})
			var once, released sync.Once
			free := func() { released.Do(func() { close(release) }) }
			t.Cleanup(free)
			rec := &logReceiver{fail: func(outbox.Event, int) error {
				once.Do(func() { close(inside) })
				<-release
				return nil
			}}
			r := logRelayEnv{pool: env.pool, log: l, store: env.store}.relay(t, rec, postgres.LogRelayConfig{LeaseDuration: time.Minute})
			postgres.SilenceLogRelay(r)
			if warm {
				if st, err := r.Step(ctx); err != nil || st.Read != 0 {
					t.Fatalf("step of an empty log: %+v, %v", st, err)
				}
			}
			appendKeyed(t, env.log, env.pool, "k/0", "k/1", "solo")
			done := make(chan error, 1)
			go func() {
				_, err := r.Step(ctx)
				done <- err
			}()
			<-inside
			checkHoldsNothing(t, env.pool, app, "the relay's session while it delivers")
			free()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if len(rec.got) != 3 {
				t.Errorf("delivered %d events, want 3", len(rec.got))
			}
		})
	}
}

// TestLogRelayCursorMovedMeanwhile: a LogCursor of the relay's name used outside any
// relay (which the lock does not keep out) acknowledges while the relay delivers: the
// relay's step then commits nothing, not even its moves.
func TestLogRelayCursorMovedMeanwhile(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, nil)
	ctx := context.Background()
	appendKeyed(t, env.log, env.pool, "a/0", "b/0")
	other := logCursor(t, env.log, postgres.DefaultLogRelayCursor)
	var once sync.Once
	rec := &logReceiver{fail: func(e outbox.Event, _ int) error {
		once.Do(func() {
			if got := readAckLog(t, other, 10); len(got) != 2 {
				t.Errorf("the other reader read %v", got)
			}
		})
		if e.EntityID == "a/0" {
			return errors.New("receiver answers 500")
		}
		return nil
	}}
	r := env.relay(t, rec, postgres.LogRelayConfig{MaxConcurrent: 1})
	if st, err := r.Step(ctx); !errors.Is(err, postgres.ErrLogCursorMoved) {
		t.Fatalf("step: %+v, %v; want ErrLogCursorMoved", st, err)
	}
	if events := tableEvents(t, env.store); len(events) != 0 {
		t.Fatalf("the step whose cursor moved moved %d events to the table; want none", len(events))
	}
	if st, err := r.Step(ctx); err != nil || st.Read != 0 {
		t.Fatalf("the next step: %+v, %v; want it to read from where the other reader left the cursor", st, err)
	}
}

// TestLogRelayTakeover: a relay whose session ends (its process died; or it froze, and
// the server ended the session after LeaseDuration) loses the cursor to another, which
// delivers the batch again; one that is alive keeps it however long it delivers.
func TestLogRelayTakeover(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"killed", "frozen", "alive"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			env := newLogRelayEnv(t, newPool(t, 2, ""))
			ctx := context.Background()
			appendKeyed(t, env.log, env.pool, "k/0", "k/1", "k/2")
			app := randomName("relay_a_")
			poolA := newPool(t, 2, app)
			logA, err := postgres.NewLog(ctx, poolA, env.log.Config())
			if err != nil {
				t.Fatal(err)
			}
			inside, release := make(chan struct{}), make(chan struct{})
			var once, released sync.Once
			free := func() { released.Do(func() { close(release) }) }
			t.Cleanup(free) // a failed test must not leave a blocked in its handler, holding its pool
			recA := &logReceiver{fail: func(e outbox.Event, _ int) error {
				if e.EntityID == "k/1" {
					once.Do(func() { close(inside) })
					<-release
				}
				return nil
			}}
			lease := 300 * time.Millisecond
			a := logRelayEnv{pool: poolA, log: logA, store: env.store}.relay(t, recA, postgres.LogRelayConfig{LeaseDuration: lease})
			if how == "frozen" {
				postgres.SilenceLogRelay(a)
			}
			b := env.relay(t, &logReceiver{}, postgres.LogRelayConfig{LeaseDuration: lease})
			done := inBackground(ctx, a.Step)
			<-inside
			if st, err := b.Step(ctx); err != nil || !st.Busy {
				t.Fatalf("b while a delivers: %+v, %v; want Busy", st, err)
			}
			// While it delivers, a's transaction holds the lock and nothing else: no
			// transaction ID, and no snapshot, so it holds back neither readers nor
			// vacuum. The step's read dropped its portal itself (setLease), so this
			// holds from the start of the deliveries, and for the frozen relay too,
			// whose heartbeat is off (its session ends after the lease).
			checkHoldsNothing(t, env.pool, app, "a's session while it delivers")
			switch how {
			case "killed":
				if _, err := env.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app); err != nil {
					t.Fatal(err)
				}
			case "frozen", "alive":
				time.Sleep(3 * lease)
			}
			var took postgres.LogRelayStep
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, err := b.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !st.Busy || how == "alive" || time.Now().After(deadline) {
					took = st
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			free()
			res := <-done
			if how == "alive" {
				if !took.Busy {
					t.Fatalf("b took the cursor from a relay that is alive and delivering: %+v", took)
				}
				if res.err != nil || res.st.Delivered != 3 {
					t.Fatalf("a: %+v, %v; want its batch delivered and committed", res.st, res.err)
				}
				return
			}
			if took.Busy || took.Delivered != 3 {
				t.Fatalf("b after a's session ended: %+v; want the batch taken over and delivered", took)
			}
			if res.err == nil {
				t.Fatalf("a committed after losing its session: %+v", res.st)
			}
			if st, err := b.Step(ctx); err != nil || st.Read != 0 {
				t.Fatalf("b again: %+v, %v; want nothing left", st, err)
			}
		})
	}
}

// TestLogRelayEndToEnd: 10,000 events appended by writers while a relay delivers from
// the log and today's Processor from the events table, into a receiver that fails 3 %
// of attempts at random: every event is delivered at least once, and each key's in
// order, across both.
func TestLogRelayEndToEnd(t *testing.T) {
	t.Parallel()
	env := newLogRelayEnv(t, newPool(t, 6, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	const writers, keysPerWriter, total = 8, 25, 10_000
	var mu sync.Mutex
	var accepted []string
	attempts := 0
	h := outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if rand.N(100) < 3 {
			return errors.New("receiver answers 503")
		}
		accepted = append(accepted, e.EntityID)
		return nil
	})
	retry := outbox.RetryPolicy{Delays: []time.Duration{5 * time.Millisecond}, MaxAttempts: 1000, Jitter: -1}
	r := env.relay(t, h, postgres.LogRelayConfig{BatchSize: 200, MaxConcurrent: 8, PollInterval: 5 * time.Millisecond, Retry: retry})
	p, err := outbox.NewProcessor(env.store, h, outbox.Config{BatchSize: 100, MaxConcurrent: 8, PollInterval: 5 * time.Millisecond,
		Retry: retry, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var run sync.WaitGroup
	run.Go(func() { _ = r.Run(runCtx) })
	if err := p.Start(runCtx); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			next := make([]int, keysPerWriter)
			for n := 0; n < total/writers; {
				size := min(1+rand.N(5), total/writers-n)
				names := make([]string, size)
				for i := range names {
					k := rand.N(keysPerWriter)
					names[i] = fmt.Sprintf("w%dk%d/%d", w, k, next[k])
					next[k]++
				}
				events := make([]*outbox.Event, size)
				for i, name := range names {
					events[i] = outbox.NewEvent("order.created", name, "user-1")
					events[i].OrderingKey, _, _ = strings.Cut(name, "/")
				}
				if err := pgx.BeginFunc(ctx, env.pool, func(tx pgx.Tx) error { return env.log.AppendTx(ctx, tx, events...) }); err != nil {
					t.Error(err)
					return
				}
				n += size
			}
		})
	}
	wg.Wait()
	for {
		mu.Lock()
		distinct := map[string]bool{}
		for _, e := range accepted {
			distinct[e] = true
		}
		n := len(distinct)
		mu.Unlock()
		if n == total {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d events delivered before the deadline", n, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	run.Wait()
	if err := p.Stop(context.Background()); err != nil && !errors.Is(err, outbox.ErrClosed) {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	counts := checkKeyOrder(t, accepted)
	sum := 0
	for _, c := range counts {
		sum += c
	}
	if sum != total {
		t.Fatalf("%d distinct events delivered in key order, want %d", sum, total)
	}
	moved := tableEvents(t, env.store)
	failedFirst := 0
	for _, e := range moved {
		if len(e.Errors) > 0 && e.Errors[0].Attempt == 1 {
			failedFirst++
		}
	}
	if failedFirst == 0 {
		t.Fatal("no event failed its first attempt: the test did not exercise the move")
	}
	t.Logf("%d events, %d attempts, %d accepted (%d again); %d moved to the events table (%d failed there first)",
		total, attempts, len(accepted), len(accepted)-total, len(moved), failedFirst)
}

func TestLogRelayConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg   postgres.LogRelayConfig
		field string
	}{
		{postgres.LogRelayConfig{BatchSize: -1}, "postgres.LogRelayConfig.BatchSize"},
		{postgres.LogRelayConfig{MaxConcurrent: -1}, "postgres.LogRelayConfig.MaxConcurrent"},
		{postgres.LogRelayConfig{Concurrency: -1}, "postgres.LogRelayConfig.Concurrency"},
		{postgres.LogRelayConfig{PollInterval: -time.Second}, "postgres.LogRelayConfig.PollInterval"},
		{postgres.LogRelayConfig{LeaseDuration: time.Millisecond}, "postgres.LogRelayConfig.LeaseDuration"},
		{postgres.LogRelayConfig{Retry: outbox.RetryPolicy{Jitter: 2}}, "postgres.LogRelayConfig.Retry.Jitter"},
		{postgres.LogRelayConfig{Breaker: outbox.BreakerConfig{Cooldown: -1}}, "postgres.LogRelayConfig.Breaker.Cooldown"},
	} {
		var fe *outbox.FieldError
		if err := c.cfg.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("Validate(%+v) = %v; want a FieldError naming %s", c.cfg, err, c.field)
		}
	}
	if err := (postgres.LogRelayConfig{}).Validate(); err != nil {
		t.Errorf("the zero config: %v", err)
	}
}

// checkHoldsNothing fails t unless the session of application app is idle in a
// transaction that holds no transaction ID and no snapshot (so it holds back neither
// readers nor vacuum); who names it in the failure.
func checkHoldsNothing(t *testing.T, pool *pgxpool.Pool, app, who string) {
	t.Helper()
	var state string
	var xid, xmin *string
	if err := pool.QueryRow(context.Background(), `SELECT state, backend_xid::text, backend_xmin::text FROM pg_stat_activity
		WHERE application_name = $1 AND state <> 'idle'`, app).Scan(&state, &xid, &xmin); err != nil {
		t.Fatal(err)
	}
	if state != "idle in transaction" || xid != nil || xmin != nil {
		t.Errorf("%s: state %q, xid %v, xmin %v; want idle in transaction without either", who, state, xid, deref(xmin))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// stepResult is what a relay's Step or Drain returned.
type stepResult struct {
	st  postgres.LogRelayStep
	err error
}

// inBackground runs a relay's Step or Drain on a goroutine of its own, for a test that
// acts while it is in flight, and hands its result over when it returns.
func inBackground(ctx context.Context, step func(context.Context) (postgres.LogRelayStep, error)) <-chan stepResult {
	done := make(chan stepResult, 1)
	go func() {
		st, err := step(ctx)
		done <- stepResult{st, err}
	}()
	return done
}
