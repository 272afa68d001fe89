package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// destination is a handler whose answer a test changes: per event type, or for all.
type destination struct {
	mu      sync.Mutex
	answer  func(e outbox.Event) error
	calls   map[string]int // by event type
	settled map[string]int // deliveries that succeeded, by event ID
}

func newDestination(answer func(outbox.Event) error) *destination {
	return &destination{answer: answer, calls: map[string]int{}, settled: map[string]int{}}
}

func (d *destination) Handle(_ context.Context, e outbox.Event) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[e.Type]++
	err := d.answer(e)
	if err == nil {
		d.settled[e.ID]++
	}
	return err
}

func (d *destination) set(answer func(outbox.Event) error) {
	d.mu.Lock()
	d.answer = answer
	d.mu.Unlock()
}

func (d *destination) deliveredOnce(t *testing.T, events []*outbox.Event) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range events {
		if n := d.settled[e.ID]; n != 1 {
			t.Errorf("event %s (%s) delivered %d times, want once", e.EntityID, e.Type, n)
		}
	}
}

func enqueueTypes(t *testing.T, s outbox.Store, types ...string) []*outbox.Event {
	t.Helper()
	var evs []*outbox.Event
	for i, typ := range types {
		evs = append(evs, outbox.NewEvent(typ, fmt.Sprint("e", i), "u"))
	}
	if err := s.Enqueue(context.Background(), t0, evs...); err != nil {
		t.Fatal(err)
	}
	return evs
}

func drainUntil(t *testing.T, p *outbox.Processor, clock *outboxtest.Clock, step time.Duration, rounds int) {
	t.Helper()
	for range rounds {
		if _, err := p.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		clock.Advance(step)
	}
}

func mustHealth(t *testing.T, p *outbox.Processor) outbox.Health {
	t.Helper()
	h, err := p.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func alert(h outbox.Health, rule string) (outbox.Alert, bool) {
	for _, a := range h.Alerts {
		if a.Rule == rule {
			return a, true
		}
	}
	return outbox.Alert{}, false
}

// A fault every event meets alike holds delivery: nothing is given up or counted, the
// operator is told the reason, and once it is fixed everything goes out within one probe.
func TestDestinationFaultsHoldAndNameTheirReason(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		fault  error
		reason string
	}{
		{"credentials rejected", outbox.DestinationFault(outbox.ReasonCredentials, errors.New("NOAUTH Authentication required")), outbox.ReasonCredentials},
		{"unreachable", outbox.Unavailable(errors.New("connection refused")), outbox.ReasonUnreachable},
		{"a typo'd path: 404 for every event", outbox.SuspectedFault("endpoint not found (HTTP 404)", outbox.Permanent(errors.New("http 404 Not Found"))), "endpoint not found (HTTP 404)"},
		{"a revoked token: 401 for every event", outbox.SuspectedFault(outbox.ReasonCredentials, outbox.Permanent(errors.New("http 401 Unauthorized"))), outbox.ReasonCredentials},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			store := sqlitetest.NewStore(t)
			clock := outboxtest.NewClock(t0)
			dest := newDestination(func(outbox.Event) error { return c.fault })
			p := newProcessor(t, store, dest, outbox.Config{Clock: clock, MaxConcurrent: 1,
				Breaker: outbox.BreakerConfig{Threshold: 3, Cooldown: time.Second, MaxCooldown: 4 * time.Second}})
			evs := enqueueTypes(t, store, "a", "a", "b", "b", "c", "c", "c", "a", "b", "c")
			// Ten times the whole retry budget (1s+5s+30s+2m+10m = 12m36s), a minute at a
			// time: each minute sees one probe (the cooldown is capped at 4s).
			drainUntil(t, p, clock, time.Minute, 10*13)
			st, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Completed+st.Failed+st.GivenUp != 0 || st.Pending != len(evs) {
				t.Fatalf("under the fault: %d completed, %d retrying, %d given up, %d pending; want all %d pending",
					st.Completed, st.Failed, st.GivenUp, st.Pending, len(evs))
			}
			h := mustHealth(t, p)
			a, ok := alert(h, outbox.RuleCircuitOpen)
			if !ok || !strings.Contains(a.Message, c.reason) {
				t.Fatalf("alerts %+v: want %s naming %q", h.Alerts, outbox.RuleCircuitOpen, c.reason)
			}
			if b := p.Breaker(); b.Reason != c.reason {
				t.Fatalf("Breaker().Reason = %q, want %q", b.Reason, c.reason)
			}

			dest.set(func(outbox.Event) error { return nil }) // fixed: the credential rotated, the URL corrected
			clock.Advance(4 * time.Second)                    // one probe interval at most
			if _, err := p.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			dest.deliveredOnce(t, evs)
			if h := mustHealth(t, p); !h.Healthy {
				t.Fatalf("after the fix: %+v", h.Alerts)
			}
		})
	}
}

// A suspected failure (an HTTP 404 may be the URL's or the event's) is the event's own
// once another delivery has got through since it first failed: that one event is given
// up, and nothing else is held.
func TestASuspectedFaultThatOthersGetPastGivesUpTheEventAlone(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(t0)
	evs := enqueueTypes(t, store, "a", "a", "a", "a", "a")
	bad := evs[1].ID
	dest := newDestination(func(e outbox.Event) error {
		if e.ID == bad {
			return outbox.SuspectedFault("endpoint not found (HTTP 404)", outbox.Permanent(errors.New("http 404: no such entity")))
		}
		return nil
	})
	p := newProcessor(t, store, dest, outbox.Config{Clock: clock, MaxConcurrent: 1})
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, store, bad)
	if !got.GivenUp() || !strings.Contains(got.LastError, "no such entity") {
		t.Fatalf("the event the destination alone refuses: status %s, error %q; want given up with its error", got.Status, got.LastError)
	}
	if got.Attempts != 1 {
		t.Fatalf("it was given up after %d attempts, want 1 (the first, held, was not counted)", got.Attempts)
	}
	dest.deliveredOnce(t, append(evs[:1:1], evs[2:]...))
	if p.Breaker().Open {
		t.Fatal("the circuit opened for one event's fault")
	}
}

// A target fault (one type's topic missing) holds that type's events only: the others
// are delivered meanwhile, held events are not even claimed, and the target's own probe
// lets them go once it is back.
func TestATargetFaultHoldsOnlyTheTypesThatGoThere(t *testing.T) {
	t.Parallel()
	store := &claimSpy{Store: sqlitetest.NewStore(t)}
	clock := outboxtest.NewClock(t0)
	var missing atomic.Bool
	missing.Store(true)
	dest := newDestination(func(e outbox.Event) error {
		if e.Type == "a" && missing.Load() {
			return outbox.TargetFault(outbox.ReasonTargetMissing, "outbox.a", errors.New("UNKNOWN_TOPIC_OR_PARTITION"))
		}
		return nil
	})
	p := newProcessor(t, store, dest, outbox.Config{Clock: clock, MaxConcurrent: 1, BatchSize: 4,
		Breaker: outbox.BreakerConfig{Cooldown: time.Second, MaxCooldown: 2 * time.Second}})
	evs := enqueueTypes(t, store, "a", "b", "a", "b", "a", "b", "b", "b")
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	dest.deliveredOnce(t, []*outbox.Event{evs[1], evs[3], evs[5], evs[6], evs[7]})
	if n := dest.calls["a"]; n != 1 {
		t.Fatalf("%d deliveries of type a while its topic is missing, want 1 (the rest held unattempted)", n)
	}
	if skip := store.lastSkip(); len(skip) != 1 || skip[0] != "a" {
		t.Fatalf("the last claim skipped %v, want [a]", skip)
	}
	if b := p.Breaker(); b.Open || len(b.Targets) != 1 || b.Targets[0].Target != "outbox.a" || b.Targets[0].Reason != outbox.ReasonTargetMissing {
		t.Fatalf("Breaker() = %+v, want the circuit closed and outbox.a held as missing", b)
	}
	h := mustHealth(t, p)
	if a, ok := alert(h, outbox.RuleTargetHeld); !ok || !strings.Contains(a.Message, "outbox.a") {
		t.Fatalf("alerts %+v: want %s naming outbox.a", h.Alerts, outbox.RuleTargetHeld)
	}
	drainUntil(t, p, clock, 2*time.Second, 20) // still missing: probes only
	if n := dest.calls["a"]; n > 1+20 {
		t.Fatalf("%d deliveries of type a over 20 probe intervals, want one probe each at most", n)
	}
	if st, _ := p.Stats(context.Background()); st.Failed+st.GivenUp != 0 {
		t.Fatalf("a missing target's events were counted: %+v", st)
	}

	missing.Store(false) // the topic is created
	clock.Advance(2 * time.Second)
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	dest.deliveredOnce(t, evs)
	if b := p.Breaker(); len(b.Targets) != 0 {
		t.Fatalf("targets still held after the probe got through: %+v", b.Targets)
	}
}

// claimSpy remembers the SkipTypes of the last claim.
type claimSpy struct {
	outbox.Store
	mu   sync.Mutex
	skip []string
}

func (s *claimSpy) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	s.mu.Lock()
	s.skip = p.SkipTypes
	s.mu.Unlock()
	return s.Store.Claim(ctx, p)
}

func (s *claimSpy) lastSkip() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skip
}

// Whatever a receiver answers, the error recorded is text any store keeps: valid UTF-8,
// no NUL or control characters, at most MaxErrorLength bytes.
func TestErrorTextIsRecordedAsAStoreCanKeepIt(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"NUL":                    "bad\x00body",
		"cut inside a rune":      strings.Repeat("x", 511) + "\xe2\x82",
		"invalid UTF-8":          "\xff\xfe body",
		"control characters":     "line\r\nbreak\x1b[31m",
		"huge":                   strings.Repeat("é", 10000),
		"plain, kept as written": "http 503 Service Unavailable",
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			store := sqlitetest.NewStore(t)
			evs := enqueueTypes(t, store, "a")
			h := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return errors.New(text) })
			p := newProcessor(t, store, h, outbox.Config{Clock: outboxtest.NewClock(t0)})
			if _, err := p.ProcessBatch(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := mustGet(t, store, evs[0].ID).LastError
			switch {
			case !utf8.ValidString(got), strings.ContainsAny(got, "\x00\r\n\x1b"), len(got) > outbox.MaxErrorLength:
				t.Fatalf("recorded error %q (%d bytes): want valid UTF-8, no control characters, at most %d bytes", got, len(got), outbox.MaxErrorLength)
			case name == "plain, kept as written" && got != text:
				t.Fatalf("recorded %q, want %q unchanged", got, text)
			case got == "":
				t.Fatal("nothing recorded")
			}
		})
	}
}

// refusingStore refuses, as PostgreSQL refuses a NUL, any Settle holding an outcome
// whose error text contains "poison".
type refusingStore struct{ outbox.Store }

func (s refusingStore) Settle(ctx context.Context, owner string, now time.Time, outcomes []outbox.Outcome) error {
	for _, o := range outcomes {
		if strings.Contains(o.Error, "poison") {
			return errors.New("invalid byte sequence for encoding UTF8")
		}
	}
	return s.Store.Settle(ctx, owner, now, outcomes)
}

// One outcome the store refuses loses neither the batch's other outcomes nor its own:
// it is recorded with a plain error instead.
func TestAnOutcomeTheStoreRefusesDoesNotLoseTheOthers(t *testing.T) {
	t.Parallel()
	inner := sqlitetest.NewStore(t)
	store := refusingStore{inner}
	evs := enqueueTypes(t, store, "a", "a", "a")
	dest := newDestination(func(e outbox.Event) error {
		if e.ID == evs[1].ID {
			return errors.New("poison")
		}
		return nil
	})
	p := newProcessor(t, store, dest, outbox.Config{Clock: outboxtest.NewClock(t0)})
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		got := mustGet(t, inner, e.ID)
		want := outbox.StatusCompleted
		if i == 1 {
			want = outbox.StatusFailed
		}
		if got.Status != want {
			t.Fatalf("event %d: %s, want %s", i, got.Status, want)
		}
	}
	if got := mustGet(t, inner, evs[1].ID); got.NextAttemptAt.IsZero() || !strings.Contains(got.LastError, "refused") {
		t.Fatalf("the refused outcome: next attempt %v, error %q; want a retry with a plain error", got.NextAttemptAt, got.LastError)
	}
}

// tally is an observer that counts every call it gets, optional interfaces included.
type tally struct {
	mu                                  sync.Mutex
	claims, deliveries, unavail, settle int
	holds                               []string
}

func (o *tally) ObserveClaim(int, time.Duration) { o.mu.Lock(); o.claims++; o.mu.Unlock() }
func (o *tally) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {
	o.mu.Lock()
	o.deliveries++
	o.mu.Unlock()
}
func (o *tally) ObserveUnavailable(outbox.Event, error) { o.mu.Lock(); o.unavail++; o.mu.Unlock() }
func (o *tally) ObserveHold(target, reason string, held bool) {
	o.mu.Lock()
	o.holds = append(o.holds, fmt.Sprintf("%q %s %v", target, reason, held))
	o.mu.Unlock()
}
func (o *tally) ObserveSettle(int, time.Duration, error) { o.mu.Lock(); o.settle++; o.mu.Unlock() }

// Every observer is told everything: none depends on another to forward calls.
func TestEveryObserverSeesEveryCall(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(t0)
	enqueueTypes(t, store, "a", "a", "a")
	var down atomic.Bool
	down.Store(true)
	dest := newDestination(func(outbox.Event) error {
		if down.Load() {
			return outbox.DestinationFault(outbox.ReasonCredentials, errors.New("401"))
		}
		return nil
	})
	one, two := &tally{}, &tally{}
	p := newProcessor(t, store, dest, outbox.Config{Clock: clock, MaxConcurrent: 1, Observers: []outbox.Observer{one, two},
		Breaker: outbox.BreakerConfig{Threshold: 2}})
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	clock.Advance(time.Minute)
	if _, err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]*tally{"first": one, "second": two} {
		want := fmt.Sprintf(`["" %s true "" %s false]`, outbox.ReasonCredentials, outbox.ReasonCredentials)
		if o.claims == 0 || o.deliveries != 5 || o.unavail != 2 || o.settle == 0 || fmt.Sprint(o.holds) != want {
			t.Errorf("%s observer: %d claims, %d deliveries, %d unavailable, %d settles, holds %v; want claims and settles, 5 deliveries (2 released as unavailable, 3 delivered; the third event was handed back unattempted), 2 unavailable, holds %s",
				name, o.claims, o.deliveries, o.unavail, o.settle, o.holds, want)
		}
	}
}
