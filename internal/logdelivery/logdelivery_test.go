package logdelivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testConfig() Config {
	return Config{
		MaxConcurrent:  3,
		HandlerTimeout: time.Minute,
		Retry:          outbox.RetryPolicy{Delays: []time.Duration{time.Second, 5 * time.Second}, MaxAttempts: 5, Jitter: -1},
		Breaker: outbox.BreakerConfig{Cooldown: time.Second, MaxCooldown: 5 * time.Second,
			IsUnavailable: outbox.IsUnavailable},
		Clock:  fixedClock{t0},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func events(keys ...string) []outbox.Event {
	es := make([]outbox.Event, len(keys))
	for i, k := range keys {
		es[i] = outbox.Event{ID: fmt.Sprintf("e%d", i), Type: "t", OrderingKey: k}
	}
	return es
}

func TestGroupsKeepKeyOrderAndFirstAppearance(t *testing.T) {
	t.Parallel()
	groups, keys := Groups(events("a", "", "b", "a", "", "b", "c", "a"))
	want := [][]int{{0, 3, 7}, {1}, {2, 5}, {4}, {6}}
	if !slices.EqualFunc(groups, want, slices.Equal) {
		t.Fatalf("groups = %v, want %v", groups, want)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Fatalf("keys = %v", keys)
	}
}

// TestDeliverEachOneEventOfAKeyAtATime: per-event handler, MaxConcurrent groups at once
// and never two of one key; each key in log order; a key stops at its first failure.
func TestDeliverEachOneEventOfAKeyAtATime(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	inFlight, most := map[string]int{}, 0
	total := 0
	var seen []string
	es := events("a", "b", "c", "d", "a", "b", "c", "d", "a", "b", "c", "d", "x", "x")
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		inFlight[e.OrderingKey]++
		total++
		if inFlight[e.OrderingKey] > 1 {
			t.Errorf("two events of key %s at once", e.OrderingKey)
		}
		most = max(most, total)
		seen = append(seen, e.ID)
		mu.Unlock()
		defer func() {
			mu.Lock()
			inFlight[e.OrderingKey]--
			total--
			mu.Unlock()
		}()
		if e.ID == "e12" {
			return errors.New("boom")
		}
		return nil
	})
	d := New(h, testConfig())
	groups, _ := Groups(es)
	res := d.Deliver(context.Background(), es, groups)
	if most > 3 {
		t.Errorf("%d deliveries at once, MaxConcurrent 3", most)
	}
	for i, r := range res {
		want := Delivered
		switch i {
		case 12:
			want = Failed
		case 13:
			want = NotAttempted
		}
		if r.Kind != want {
			t.Errorf("event %d: kind %v, want %v", i, r.Kind, want)
		}
	}
	pos := map[string]int{}
	for i, id := range seen {
		pos[id] = i
	}
	for _, g := range groups {
		for j := 1; j < len(g); j++ {
			a, b := es[g[j-1]].ID, es[g[j]].ID
			if pb, ok := pos[b]; ok && pos[a] > pb {
				t.Errorf("%s delivered before %s", b, a)
			}
		}
	}
	for _, e := range es {
		if e.Status != outbox.StatusProcessing || e.Attempts != 1 || !e.LastAttemptAt.Equal(t0) {
			t.Fatalf("event %s not marked as in its first attempt: %+v", e.ID, e)
		}
	}
}

// TestDeliverEachReachesMaxConcurrent: through a handler that blocks, MaxConcurrent
// groups are delivered at once, never more, and every group is delivered.
func TestDeliverEachReachesMaxConcurrent(t *testing.T) {
	t.Parallel()
	var (
		mu             sync.Mutex
		inFlight, most int
	)
	full := make(chan struct{})
	var once sync.Once
	h := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == 3 {
			once.Do(func() { close(full) })
		}
		mu.Unlock()
		defer func() {
			mu.Lock()
			inFlight--
			mu.Unlock()
		}()
		select {
		case <-full: // three at once: go on
		case <-time.After(10 * time.Second):
			return errors.New("the other deliveries never started")
		}
		return nil
	})
	es := events("a", "b", "c", "d", "e", "f", "g")
	d := New(h, testConfig()) // MaxConcurrent 3
	groups, _ := Groups(es)
	for i, r := range d.Deliver(context.Background(), es, groups) {
		if r.Kind != Delivered {
			t.Errorf("event %d: %v (%v)", i, r.Kind, r.Err)
		}
	}
	if most != 3 {
		t.Errorf("%d deliveries at once at most, want MaxConcurrent 3", most)
	}
}

type batchFunc func(ctx context.Context, es []outbox.Event) []error

func (f batchFunc) Handle(ctx context.Context, e outbox.Event) error {
	return f(ctx, []outbox.Event{e})[0]
}
func (f batchFunc) HandleBatch(ctx context.Context, es []outbox.Event) []error { return f(ctx, es) }

// TestDeliverWavesOneEventPerKeyPerCall: a BatchHandler gets each key's next event in
// the next call; a failed key leaves the waves, the others go on.
func TestDeliverWavesOneEventPerKeyPerCall(t *testing.T) {
	t.Parallel()
	var calls [][]string
	es := events("a", "b", "a", "b", "a", "", "b")
	h := batchFunc(func(ctx context.Context, batch []outbox.Event) []error {
		ids := []string{}
		errs := make([]error, len(batch))
		for i, e := range batch {
			ids = append(ids, e.ID)
			if e.ID == "e1" {
				errs[i] = errors.New("b fails")
			}
		}
		calls = append(calls, ids)
		return errs
	})
	d := New(h, testConfig())
	groups, _ := Groups(es)
	res := d.Deliver(context.Background(), es, groups)
	want := [][]string{{"e0", "e1", "e5"}, {"e2"}, {"e4"}}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("calls = %v, want %v", calls, want)
	}
	kinds := []Kind{Delivered, Failed, Delivered, NotAttempted, Delivered, Delivered, NotAttempted}
	for i, r := range res {
		if r.Kind != kinds[i] {
			t.Errorf("event %d: %v, want %v", i, r.Kind, kinds[i])
		}
	}
	s := Summarize(groups, res)
	var moved []int
	for _, m := range s.Moves {
		moved = append(moved, m.Index)
	}
	// Key b's failure, then its later events pending; nothing else.
	if !slices.Equal(moved, []int{1, 3, 6}) || s.Moves[0].Failed == nil || s.Moves[1].Failed != nil {
		t.Fatalf("moves = %+v", s.Moves)
	}
	if s.Delivered != 4 || !s.Answered || s.Fault != nil {
		t.Fatalf("summary = %+v", s)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	plain := errors.New("500")
	for _, tc := range []struct {
		name      string
		err       error
		budget    int
		noHolds   bool
		kind      Kind
		next      time.Duration // from t0; 0: given up
		textMatch string
	}{
		{name: "retryable", err: plain, kind: Failed, next: time.Second},
		{name: "retry-after longer wins", err: outbox.RetryAfter(plain, time.Minute), kind: Failed, next: time.Minute},
		{name: "retry-after shorter loses", err: outbox.RetryAfter(plain, time.Millisecond), kind: Failed, next: time.Second},
		{name: "permanent", err: outbox.Permanent(plain), kind: Failed},
		{name: "budget of one", err: plain, budget: 1, kind: Failed},
		{name: "unreachable holds", err: outbox.Unavailable(plain), kind: Held},
		{name: "target fault holds its type", err: outbox.TargetFault("missing", "topic", plain), kind: TargetHeld},
		{name: "permanent over destination", err: outbox.Permanent(outbox.Unavailable(plain)), kind: Failed},
		{name: "holds disabled", err: outbox.Unavailable(plain), noHolds: true, kind: Failed, next: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			if tc.noHolds {
				cfg.Breaker.Threshold = -1
			}
			d := New(outbox.HandlerFunc(func(context.Context, outbox.Event) error { return tc.err }), cfg)
			es := []outbox.Event{{ID: "x", Type: "t", MaxAttempts: tc.budget}}
			r := d.Deliver(context.Background(), es, [][]int{{0}})[0]
			if r.Kind != tc.kind {
				t.Fatalf("kind %v, want %v (err %v)", r.Kind, tc.kind, r.Err)
			}
			if !errors.Is(r.Err, plain) {
				t.Fatalf("err %v does not wrap the handler's", r.Err)
			}
			if tc.kind == Failed {
				var want time.Time
				if tc.next > 0 {
					want = t0.Add(tc.next)
				}
				if !r.Next.Equal(want) || !r.At.Equal(t0) {
					t.Fatalf("next %v at %v, want next %v at %v", r.Next, r.At, want, t0)
				}
			}
		})
	}
}

// TestSuspectedFaultIsTheDestinationsUntilAnotherSucceeds: a suspected fault holds
// until a delivery that started after it succeeded; then the same event's same failure
// is its own.
func TestSuspectedFaultIsTheDestinationsUntilAnotherSucceeds(t *testing.T) {
	t.Parallel()
	suspect := outbox.SuspectedFault("404", errors.New("not found"))
	d := New(outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		if e.ID == "bad" {
			return suspect
		}
		return nil
	}), testConfig())
	bad := []outbox.Event{{ID: "bad", Type: "t"}}
	if k := d.Deliver(context.Background(), bad, [][]int{{0}})[0].Kind; k != Held {
		t.Fatalf("first suspected failure: %v, want Held", k)
	}
	if k := d.Deliver(context.Background(), bad, [][]int{{0}})[0].Kind; k != Held {
		t.Fatalf("again with nothing delivered meanwhile: %v, want Held", k)
	}
	good := []outbox.Event{{ID: "good", Type: "t"}}
	if k := d.Deliver(context.Background(), good, [][]int{{0}})[0].Kind; k != Delivered {
		t.Fatalf("good: %v", k)
	}
	if k := d.Deliver(context.Background(), bad, [][]int{{0}})[0].Kind; k != Failed {
		t.Fatalf("after another delivery succeeded: %v, want Failed", k)
	}
}

func TestHeldStopsTheOtherGroups(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxConcurrent = 1
	calls := 0
	d := New(outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		calls++
		if e.ID == "e1" {
			return outbox.Unavailable(errors.New("refused"))
		}
		return nil
	}), cfg)
	es := events("a", "b", "c", "d")
	groups, _ := Groups(es)
	res := d.Deliver(context.Background(), es, groups)
	s := Summarize(groups, res)
	if calls != 2 || s.Fault == nil || len(s.Moves) != 0 || res[2].Kind != NotAttempted {
		t.Fatalf("calls %d, summary %+v, results %+v", calls, s, res)
	}
}

func TestPanicsTimeoutsAndWrongCountsAreFailures(t *testing.T) {
	t.Parallel()
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		d := New(outbox.HandlerFunc(func(context.Context, outbox.Event) error { panic("oops") }), testConfig())
		r := d.Deliver(context.Background(), events(""), [][]int{{0}})[0]
		if r.Kind != Failed || !strings.Contains(r.Err.Error(), "panicked: oops") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("batch panic", func(t *testing.T) {
		t.Parallel()
		d := New(batchFunc(func(context.Context, []outbox.Event) []error { panic("oops") }), testConfig())
		res := d.Deliver(context.Background(), events("", ""), [][]int{{0}, {1}})
		for _, r := range res {
			if r.Kind != Failed || !strings.Contains(r.Err.Error(), "panicked: oops") {
				t.Fatalf("%+v", r)
			}
		}
	})
	t.Run("wrong count", func(t *testing.T) {
		t.Parallel()
		d := New(batchFunc(func(context.Context, []outbox.Event) []error { return nil }), testConfig())
		res := d.Deliver(context.Background(), events("", ""), [][]int{{0}, {1}})
		for _, r := range res {
			if r.Kind != Failed || !strings.Contains(r.Err.Error(), "0 results for 2 events") {
				t.Fatalf("%+v", r)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig()
		cfg.HandlerTimeout = time.Nanosecond
		d := New(outbox.HandlerFunc(func(ctx context.Context, _ outbox.Event) error {
			<-ctx.Done() // the handler waits for its deadline, as a slow sink would
			return ctx.Err()
		}), cfg)
		r := d.Deliver(context.Background(), events(""), [][]int{{0}})[0]
		if r.Kind != Failed || !errors.Is(r.Err, context.DeadlineExceeded) || !strings.Contains(r.Err.Error(), "timed out after 1ns") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		d := New(outbox.HandlerFunc(func(ctx context.Context, _ outbox.Event) error {
			cancel()
			return ctx.Err()
		}), testConfig())
		res := d.Deliver(ctx, events("a", "a"), [][]int{{0, 1}})
		if res[0].Kind != Interrupted || res[1].Kind != NotAttempted {
			t.Fatalf("%+v", res)
		}
	})
}

func TestHoldBacksOffAndProbes(t *testing.T) {
	t.Parallel()
	d := New(outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }), testConfig())
	if d.Limit(500) != 500 {
		t.Fatal("limit before any hold")
	}
	var waits []time.Duration
	for range 5 {
		waits = append(waits, d.Hold(errors.New("down"), 1))
		if d.Limit(500) != 1 {
			t.Fatal("not probing after a hold")
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	d.Answered()
	if d.Limit(500) != 500 || d.Hold(errors.New("down"), 1) != time.Second {
		t.Fatal("Answered did not reset the backoff")
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	got := ErrorText(errors.New("a\nb\tc\x00d\xffe"))
	if got != "a b c\uFFFDd\uFFFDe" {
		t.Fatalf("%q", got)
	}
	long := ErrorText(errors.New(strings.Repeat("é", outbox.MaxErrorLength)))
	if len(long) > outbox.MaxErrorLength || !strings.HasSuffix(long, "…") || !utf8.ValidString(long) {
		t.Fatalf("long text: %d bytes, suffix %q", len(long), long[len(long)-5:])
	}
}

func TestHeadPollEverySlowsWhileIdle(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	for _, tc := range []struct {
		idle, every, most, want time.Duration
	}{
		{0, 2 * ms, 32 * ms, 2 * ms},
		{999 * ms, 2 * ms, 32 * ms, 2 * ms},
		{time.Second, 2 * ms, 32 * ms, 4 * ms},
		{3500 * ms, 2 * ms, 32 * ms, 16 * ms},
		{time.Hour, 2 * ms, 32 * ms, 32 * ms},
		{time.Hour, 2 * ms, 5 * ms, 5 * ms},
		{time.Hour, 2 * ms, 2 * ms, 2 * ms}, // most at every: no slowing
		{time.Hour, 2 * ms, -1, 2 * ms},     // most below every: no slowing
		{time.Hour, -1, 32 * ms, -1},        // head polls off stay off
	} {
		if got := HeadPollEvery(tc.idle, tc.every, tc.most); got != tc.want {
			t.Errorf("HeadPollEvery(%s, %s, %s) = %s, want %s", tc.idle, tc.every, tc.most, got, tc.want)
		}
	}
}

// recorder is an outbox.BreakerObserver that writes down what it is told.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *recorder) ObserveClaim(n int, _ time.Duration) { r.add("claim %d", n) }
func (r *recorder) ObserveDelivery(e outbox.Event, o outbox.Outcome, _ time.Duration) {
	result := map[outbox.Result]string{outbox.Delivered: "delivered", outbox.Failed: "failed", outbox.Released: "released"}[o.Result]
	if o.Result == outbox.Failed && o.NextAttemptAt.IsZero() {
		result += " given up"
	}
	r.add("%s attempt %d: %s %q", e.ID, e.Attempts, result, o.Error)
}
func (r *recorder) ObserveUnavailable(e outbox.Event, err error) { r.add("%s unavailable", e.ID) }
func (r *recorder) ObserveHold(target, reason string, held bool) {
	r.add("hold %q %q %v", target, reason, held)
}

// TestObserversAreToldAsAProcessorsAre: reads are claims, attempts come with the
// Processor's outcomes (a held one Released and unavailable, a failure Failed with its
// next attempt or given up), and the first hold in a row and the answer after it are a
// hold of the whole destination and its end, with the sink's reason.
func TestObserversAreToldAsAProcessorsAre(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	cfg := testConfig()
	cfg.MaxConcurrent = 1
	cfg.Observers = []outbox.Observer{rec}
	refused := &outbox.DestinationError{Reason: outbox.ReasonCredentials, Err: errors.New("401")}
	errs := map[string]error{
		"e1": errors.New("500"),
		"e2": outbox.Permanent(errors.New("400")),
		"e3": refused,
	}
	d := New(outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error { return errs[e.ID] }), cfg)
	es := events("", "", "", "", "")
	d.Read(len(es), time.Millisecond)
	rs := d.Deliver(context.Background(), es, [][]int{{0}, {1}, {2}, {3}, {4}})
	if rs[4].Kind != NotAttempted {
		t.Fatalf("e4 after the held e3: %v", rs[4].Kind)
	}
	d.Hold(rs[3].Err, len(es))
	d.Hold(rs[3].Err, 1) // a second hold in a row is not a new one
	d.Answered()
	d.Answered() // nor is a second answer
	want := []string{
		`claim 5`,
		`e0 attempt 1: delivered ""`,
		`e1 attempt 1: failed "500"`,
		`e2 attempt 1: failed given up "permanent: 400"`,
		`e3 unavailable`,
		`e3 attempt 1: released "held, attempt not counted: credentials rejected: 401"`,
		`hold "" "credentials rejected" true`,
		`hold "" "credentials rejected" false`,
	}
	if !slices.Equal(rec.lines, want) {
		t.Fatalf("observed:\n%s\nwant:\n%s", strings.Join(rec.lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestTargetFaultHoldsOnlyItsType: a fault of one target (a missing topic) sends the
// event on to the events table, pending, and its type's later events too, unattempted,
// until the hold's cooldown has passed; other types are delivered, and a key's events
// behind a held one follow it. A probe after the cooldown that fails again doubles the
// wait; one that gets through ends the hold. The observers hear the target's hold and
// its end once each.
func TestTargetFaultHoldsOnlyItsType(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	clock := outboxtest.NewClock(t0)
	cfg := testConfig()
	cfg.MaxConcurrent = 1 // groups in order: the skips below are known
	cfg.Clock = clock
	cfg.Observers = []outbox.Observer{rec}
	var missing atomic.Bool
	missing.Store(true)
	attempted := map[string]int{}
	var mu sync.Mutex
	d := New(outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		mu.Lock()
		attempted[e.ID]++
		mu.Unlock()
		if e.Type == "orders" && missing.Load() {
			return outbox.TargetFault(outbox.ReasonTargetMissing, "orders-topic", errors.New("unknown topic"))
		}
		return nil
	}), cfg)
	batch := func(spec ...string) []outbox.Event { // "type:id:key"
		es := make([]outbox.Event, len(spec))
		for i, s := range spec {
			f := strings.Split(s, ":")
			es[i] = outbox.Event{Type: f[0], ID: f[1], OrderingKey: f[2]}
		}
		return es
	}
	deliver := func(es []outbox.Event) ([]Result, Summary) {
		groups, _ := Groups(es)
		rs := d.Deliver(context.Background(), es, groups)
		return rs, Summarize(groups, rs)
	}

	es := batch("orders:o1:a", "users:u1:", "orders:o2:b", "users:u2:a", "users:u3:c")
	rs, sum := deliver(es)
	want := []Kind{TargetHeld, Delivered, TargetHeld, NotAttempted, Delivered}
	for i, r := range rs {
		if r.Kind != want[i] {
			t.Fatalf("%s: %v, want %v", es[i].ID, r.Kind, want[i])
		}
	}
	if !rs[0].Attempted || rs[2].Attempted || attempted["o2"] != 0 {
		t.Fatalf("o1 attempted %v, o2 attempted %v (%d calls): want o1's attempt only", rs[0].Attempted, rs[2].Attempted, attempted["o2"])
	}
	if sum.Fault != nil || sum.Delivered != 2 || len(sum.Moves) != 3 ||
		sum.Moves[0].Index != 0 || sum.Moves[0].Failed == nil || sum.Moves[1].Index != 3 || sum.Moves[1].Failed != nil ||
		sum.Moves[2].Index != 2 || sum.Moves[2].Failed == nil {
		t.Fatalf("summary %+v: want o1 (held), u2 behind it on key a, o2 (held) moved, and no fault", sum)
	}

	clock.Advance(500 * time.Millisecond) // within the first cooldown (1 s)
	if rs, _ := deliver(batch("orders:o3:")); rs[0].Kind != TargetHeld || rs[0].Attempted {
		t.Fatalf("within the cooldown: %+v, want sent on unattempted", rs[0])
	}
	clock.Advance(time.Second)
	if rs, _ := deliver(batch("orders:o4:")); rs[0].Kind != TargetHeld || !rs[0].Attempted {
		t.Fatalf("after the cooldown: %+v, want a probe that fails", rs[0])
	}
	clock.Advance(1500 * time.Millisecond) // the wait doubled to 2 s
	if rs, _ := deliver(batch("orders:o5:")); rs[0].Attempted {
		t.Fatalf("within the doubled cooldown: %+v, want sent on unattempted", rs[0])
	}
	missing.Store(false)
	clock.Advance(time.Second)
	if rs, _ := deliver(batch("orders:o6:", "orders:o7:")); rs[0].Kind != Delivered || rs[1].Kind != Delivered {
		t.Fatalf("after the target came back: %v, %v", rs[0].Kind, rs[1].Kind)
	}
	wantLines := []string{
		`hold "orders-topic" "target missing" true`,
		`o1 unavailable`,
		`o1 attempt 1: released "held, attempt not counted: target missing (orders-topic): unknown topic"`,
		`u1 attempt 1: delivered ""`,
		`u3 attempt 1: delivered ""`,
		`o4 unavailable`,
		`o4 attempt 1: released "held, attempt not counted: target missing (orders-topic): unknown topic"`,
		`hold "orders-topic" "target missing" false`,
		`o6 attempt 1: delivered ""`,
		`o7 attempt 1: delivered ""`,
	}
	if !slices.Equal(rec.lines, wantLines) {
		t.Fatalf("observed:\n%s\nwant:\n%s", strings.Join(rec.lines, "\n"), strings.Join(wantLines, "\n"))
	}
}

// TestDeliverable: blocked keys are left out whole; other groups are cut at their
// first event of a paused type.
func TestDeliverable(t *testing.T) {
	t.Parallel()
	es := events("a", "b", "a", "", "b", "c", "a")
	es[2].Type, es[3].Type, es[5].Type = "paused", "paused", "paused"
	groups, _ := Groups(es) // a: 0 2 6; b: 1 4; "": 3; c: 5
	for _, tc := range []struct {
		name            string
		blocked, paused map[string]bool
		want            [][]int
	}{
		{name: "nothing held", want: groups},
		{name: "a blocked", blocked: map[string]bool{"a": true}, want: [][]int{{1, 4}, {3}, {5}}},
		{name: "paused type", paused: map[string]bool{"paused": true}, want: [][]int{{0}, {1, 4}}},
		{name: "both", blocked: map[string]bool{"b": true}, paused: map[string]bool{"paused": true}, want: [][]int{{0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Deliverable(es, groups, tc.blocked, tc.paused); !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// An event whose row could not be read in full is given up without a call, through
// Handle and through HandleBatch alike: Failed with no next attempt, the reason in its
// error, its key's later events not reached, and an empty type or entity ID replaced
// by the placeholder the events table takes.
func TestUnusableEventIsGivenUpWithoutACall(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			t.Parallel()
			var called []string
			var mu sync.Mutex
			record := func(e outbox.Event) {
				mu.Lock()
				defer mu.Unlock()
				called = append(called, e.ID)
			}
			var h outbox.Handler = outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
				record(e)
				return nil
			})
			if batch {
				h = batchFunc(func(ctx context.Context, es []outbox.Event) []error {
					for _, e := range es {
						record(e)
					}
					return make([]error, len(es))
				})
			}
			es := events("a", "a", "b")
			es[0].Type, es[0].Unusable = "", "type is empty"
			d := New(h, testConfig())
			groups, _ := Groups(es)
			results := d.Deliver(context.Background(), es, groups)
			if r := results[0]; r.Kind != Failed || !r.Next.IsZero() || !outbox.IsPermanent(r.Err) ||
				!strings.Contains(r.Err.Error(), "unusable row: type is empty") {
				t.Errorf("the unusable event: %+v, want it given up with its reason", r)
			}
			if results[1].Kind != NotAttempted || results[2].Kind != Delivered {
				t.Errorf("results %+v: want its key's next event not reached, and the other key delivered", results)
			}
			if !slices.Equal(called, []string{"e2"}) {
				t.Errorf("handler called for %v, want e2 alone", called)
			}
			if es[0].Type != "(empty)" {
				t.Errorf("the unusable event's type %q, want the placeholder", es[0].Type)
			}
		})
	}
}

// A scoped relay takes the events of its types and passes the others by, but takes a
// row with no type too, which is in no scope: passed by every scoped relay, it would
// be given up by none.
func TestInScopeTakesARowWithNoType(t *testing.T) {
	t.Parallel()
	es := []outbox.Event{{ID: "a", Type: "order.created"}, {ID: "b", Type: "invoice.sent"}, {ID: "c", Type: ""}}
	ids := func(es []outbox.Event) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	if got := ids(InScope(es, []string{"order.created"})); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("scoped to order.created: %v, want a and the row with no type", got)
	}
	if got := ids(InScope(es, nil)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("unscoped: %v, want every event", got)
	}
}
