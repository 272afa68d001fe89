package outboxtest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
)

// LogHarness is one fresh log of the log layout (docs/log-layout.md), with the events
// table its relay moves events to, for one test of RunLog.
type LogHarness struct {
	// Store is the events table's store. It must be an outbox.TypePauser.
	Store outbox.Store
	// Append appends the events to the log in one committed transaction.
	Append func(ctx context.Context, events ...*outbox.Event) error
	// NewRelay returns a relay of the log that delivers through handler, configured
	// as cfg says (the store's relay config with these fields set, and the rest
	// default, logging nowhere).
	NewRelay func(handler outbox.Handler, cfg LogRelayConfig) (LogRelay, error)
	// Waiting is the log's Waiting: what waits for the cursor of the given name,
	// without opening one.
	Waiting func(ctx context.Context, cursor string) (events int64, oldest time.Time, err error)
	// Peek is the log's Peek: up to limit of the events that wait for the cursor of
	// the given name, in the order its relay reads them, without opening one.
	Peek func(ctx context.Context, cursor string, limit int) ([]outbox.Event, error)
	// CopyCursor is the log's CopyCursor: it creates cursor to at from's position. It
	// fails with an error that is ErrCursorExists when to exists, and ErrCursorNotFound
	// when from does not. The suite's test of it is skipped when CopyCursor is nil.
	CopyCursor                         func(ctx context.Context, from, to string) error
	ErrCursorExists, ErrCursorNotFound error
	// Delivered is the log's Delivered: what its relays delivered from since on.
	Delivered func(ctx context.Context, since time.Time) (int64, error)
	// DeliveredByMinute is the log's DeliveredByMinute: what its relays delivered per
	// minute from since's minute up to until. The suite's test of it is skipped when
	// it is nil.
	DeliveredByMinute func(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error)
	// Retain runs the log's retention (postgres Log.Retain, sqlite Log.Trim), which
	// deletes counts of deliveries older than DeliveredRetention.
	Retain func(ctx context.Context) error
	// DeliveredRetention is the store's LogDeliveredRetention.
	DeliveredRetention time.Duration
}

// LogRelayConfig is what the suite sets of a store's log relay configuration.
type LogRelayConfig struct {
	Cursor        string
	Types         []string
	MaxConcurrent int
	Clock         outbox.Clock
	Breaker       outbox.BreakerConfig
	Observers     []outbox.Observer
}

// LogRelay is a store's log relay as the suite drives it.
type LogRelay interface {
	Step(ctx context.Context) (LogStep, error)
	Drain(ctx context.Context) (LogStep, error)
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
	Waiting(ctx context.Context) (events int64, oldest time.Time, err error)
}

// LogRelayOf adapts a store's log relay, whose steps are of type S, to LogRelay:
// conv turns its step into a LogStep.
func LogRelayOf[S any](r interface {
	Step(ctx context.Context) (S, error)
	Drain(ctx context.Context) (S, error)
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
	Waiting(ctx context.Context) (int64, time.Time, error)
}, conv func(S) LogStep) LogRelay {
	return adaptedLogRelay[S]{step: r.Step, drain: r.Drain, run: r.Run, stop: r.Stop, waiting: r.Waiting, conv: conv}
}

type adaptedLogRelay[S any] struct {
	step, drain func(context.Context) (S, error)
	run, stop   func(context.Context) error
	waiting     func(context.Context) (int64, time.Time, error)
	conv        func(S) LogStep
}

func (a adaptedLogRelay[S]) Run(ctx context.Context) error  { return a.run(ctx) }
func (a adaptedLogRelay[S]) Stop(ctx context.Context) error { return a.stop(ctx) }

func (a adaptedLogRelay[S]) Step(ctx context.Context) (LogStep, error) {
	st, err := a.step(ctx)
	return a.conv(st), err
}

func (a adaptedLogRelay[S]) Drain(ctx context.Context) (LogStep, error) {
	st, err := a.drain(ctx)
	return a.conv(st), err
}

func (a adaptedLogRelay[S]) Waiting(ctx context.Context) (int64, time.Time, error) {
	return a.waiting(ctx)
}

// LogStep is what a step or a drain of a log relay did: the counts of the stores'
// LogRelayStep.
type LogStep struct {
	Read, Delivered, Failed, Waiting int
	Held                             bool
}

// RunLog runs the log layout's conformance suite: what a relay of either store's log
// must do beside its store's own tests (observers and metrics, what waits, a fault of
// one target, paused types, scopes, shadow runs). newHarness is called once per
// subtest and must return an empty log and events table.
func RunLog(t *testing.T, newHarness func(t *testing.T) LogHarness, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h LogHarness)
	}{
		{"ReportsToMetrics", testLogReportsToMetrics},
		{"WaitingCountsWhatTheCursorHasNotPassed", testLogWaiting},
		{"PeekListsWhatWaits", testLogPeek},
		{"TargetFaultHoldsOnlyItsType", testLogTargetFault},
		{"PausedTypeWaitsInTheTable", testLogPausedType},
		{"ScopedToTypes", testLogScopedToTypes},
		{"CopiedCursorSplitsIntoScopes", testLogCopiedCursor},
		{"ShadowRun", testLogShadowRun},
		{"CommitOrderNotPriority", testLogCommitOrderNotPriority},
		{"StopFinishesTheStepInFlight", testLogStopFinishesTheStep},
		{"CountsDeliveriesPerMinute", testLogCountsDeliveries},
		{"ReadsDeliveriesByMinute", testLogDeliveredByMinute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if o.parallel {
				t.Parallel()
			}
			tc.fn(t, newHarness(t))
		})
	}
}

// logReceiver records the entities it accepted, in order, and fails as fail says
// (nil: accept).
type logReceiver struct {
	mu       sync.Mutex
	fail     func(e outbox.Event) error
	accepted []string
}

func (r *logReceiver) Handle(_ context.Context, e outbox.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(e); err != nil {
			return err
		}
	}
	r.accepted = append(r.accepted, e.EntityID)
	return nil
}

func (r *logReceiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accepted)
}

// appendNamed appends one transaction of events named "key/n" (ordering key key,
// entity the name), of type invoice.sent where invoices says so and order.created
// otherwise.
func appendNamed(t *testing.T, h LogHarness, invoices map[string]bool, names ...string) []*outbox.Event {
	t.Helper()
	events := make([]*outbox.Event, len(names))
	for i, name := range names {
		typ := "order.created"
		if invoices[name] {
			typ = "invoice.sent"
		}
		events[i] = outbox.NewEvent(typ, name, "user-1")
		events[i].OrderingKey, _, _ = strings.Cut(name, "/")
	}
	if err := h.Append(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
	return events
}

func newLogRelay(t *testing.T, h LogHarness, handler outbox.Handler, cfg LogRelayConfig) LogRelay {
	t.Helper()
	r, err := h.NewRelay(handler, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A relay given the metrics package's observer counts what it reads, delivers and
// gives up, and the hold of the whole destination while it refuses credentials, as a
// Processor's metrics do.
func testLogReportsToMetrics(t *testing.T, h LogHarness) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Logger: Discard})
	if err != nil {
		t.Fatal(err)
	}
	var refusing atomic.Bool
	rec := &logReceiver{fail: func(e outbox.Event) error {
		switch {
		case refusing.Load():
			return &outbox.DestinationError{Reason: outbox.ReasonCredentials, Err: errors.New("401 unauthorized")}
		case e.EntityID == "b/1":
			return outbox.Permanent(errors.New("422 unprocessable"))
		}
		return nil
	}}
	r := newLogRelay(t, h, rec, LogRelayConfig{MaxConcurrent: 1, Observers: []outbox.Observer{m}})

	appendNamed(t, h, nil, "a/1", "b/1", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 2 || st.Failed != 1 {
		t.Fatalf("first step: %+v, %v", st, err)
	}
	refusing.Store(true)
	appendNamed(t, h, nil, "d/1")
	if st, err := r.Step(ctx); err != nil || !st.Held {
		t.Fatalf("second step: %+v, %v", st, err)
	}
	CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 1
# HELP outbox_claimed_events_total Events claimed for delivery.
# TYPE outbox_claimed_events_total counter
outbox_claimed_events_total 4
# HELP outbox_destination_held 1 while deliveries to a target (empty: the whole destination) are held, not attempted, because of a fault of the destination named by reason (unreachable, credentials rejected, target missing).
# TYPE outbox_destination_held gauge
outbox_destination_held{reason="credentials rejected",target=""} 1
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 2
# HELP outbox_events_given_up_total Failed delivery attempts that gave the event up (permanent error or no attempts left), by event type.
# TYPE outbox_events_given_up_total counter
outbox_events_given_up_total{type="order.created"} 1
# HELP outbox_events_released_total Claimed events handed back without counting the attempt (the processor was stopping, or the destination was unavailable), by event type.
# TYPE outbox_events_released_total counter
outbox_events_released_total{type="order.created"} 1
# HELP outbox_deliveries_unavailable_total Delivery attempts that failed as the destination's fault (unreachable, credentials rejected, target missing; not counted against the event), by event type.
# TYPE outbox_deliveries_unavailable_total counter
outbox_deliveries_unavailable_total{type="order.created"} 1
`)

	refusing.Store(false)
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Held {
		t.Fatalf("step after recovery: %+v, %v", st, err)
	}
	CheckMetrics(t, reg, `
# HELP outbox_circuit_open 1 while the circuit breaker holds every delivery back because the destination is at fault, else 0.
# TYPE outbox_circuit_open gauge
outbox_circuit_open 0
# HELP outbox_events_delivered_total Deliveries that completed an event, by event type.
# TYPE outbox_events_delivered_total counter
outbox_events_delivered_total{type="order.created"} 3
`)
	if n, err := testutil.GatherAndCount(reg, "outbox_destination_held"); err != nil || n != 0 {
		t.Fatalf("%d outbox_destination_held series after the destination answered (%v), want none", n, err)
	}
}

// Waiting counts the events past the relay's cursor, with the oldest one's creation
// time, as the cursor moves; the log's Waiting says the same without a relay, and for
// a name with no cursor what a relay starting on it would read: the whole log.
func testLogWaiting(t *testing.T, h LogHarness) {
	ctx := context.Background()
	r := newLogRelay(t, h, &logReceiver{}, LogRelayConfig{Cursor: "waiting"})
	var all []*outbox.Event // what a cursor that does not exist yet would read
	check := func(step string, want int64, oldestWant time.Time) {
		t.Helper()
		n, oldest, err := r.Waiting(ctx)
		if err != nil || n != want || !oldest.Equal(oldestWant.Truncate(time.Microsecond)) {
			t.Fatalf("%s: %d waiting, oldest %v (%v); want %d, oldest %v", step, n, oldest, err, want, oldestWant)
		}
		if n2, oldest2, err := h.Waiting(ctx, "waiting"); err != nil || n2 != n || !oldest2.Equal(oldest) {
			t.Fatalf("%s: the log's Waiting says %d, oldest %v (%v); the relay's %d, %v", step, n2, oldest2, err, n, oldest)
		}
		n, oldest, err = h.Waiting(ctx, "nobody")
		if err != nil || n != int64(len(all)) || len(all) > 0 && !oldest.Equal(all[0].CreatedAt.Truncate(time.Microsecond)) {
			t.Fatalf("%s: %d wait, oldest %v (%v), for a name with no cursor; want the whole log, %d", step, n, oldest, err, len(all))
		}
	}
	check("an empty log", 0, time.Time{})
	first := appendNamed(t, h, nil, "a/1", "b/1")
	later := appendNamed(t, h, nil, "c/1")
	all = append(first, later...)
	check("three appended", 3, first[0].CreatedAt)
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	check("all delivered", 0, time.Time{})
	appendNamed(t, h, nil, "d/1")
	if n, oldest, err := r.Waiting(ctx); err != nil || n != 1 || oldest.Before(later[0].CreatedAt.Truncate(time.Microsecond)) {
		t.Fatalf("one more appended: %d waiting, oldest %v (%v)", n, oldest, err)
	}
}

// Peek lists what Waiting counts: the events the cursor has not passed, in the order
// its relay reads them (here one shard: commit order), as they were appended and
// pending, up to a limit; for a name with no cursor, the whole log from its start. It
// creates no cursor (a copy from the name finds none) and refuses bad input.
func testLogPeek(t *testing.T, h LogHarness) {
	ctx := context.Background()
	peek := func(step, cursor string, limit int, want ...string) {
		t.Helper()
		events, err := h.Peek(ctx, cursor, limit)
		if err != nil {
			t.Fatalf("%s: peek %q: %v", step, cursor, err)
		}
		got := make([]string, len(events))
		for i, e := range events {
			got[i] = e.EntityID
			if e.Status != outbox.StatusPending || e.ID == "" || e.Type != "order.created" || e.CreatedAt.IsZero() {
				t.Errorf("%s: peek %q: event %+v, want it as appended, pending", step, cursor, e)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: peek %q lists %v, want %v", step, cursor, got, want)
		}
	}
	for _, bad := range []struct {
		cursor string
		limit  int
	}{{"", 10}, {"peek", 0}, {"peek", -1}} {
		if _, err := h.Peek(ctx, bad.cursor, bad.limit); !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("peek %q, limit %d: %v, want outbox.ErrInvalid", bad.cursor, bad.limit, err)
		}
	}
	peek("an empty log", "peek", 10)
	first := appendNamed(t, h, nil, "a/1", "b/1")
	appendNamed(t, h, nil, "c/1")
	peek("three appended", "peek", 10, "a/1", "b/1", "c/1")
	peek("a limit", "peek", 2, "a/1", "b/1")
	if n, _, err := h.Waiting(ctx, "peek"); err != nil || n != 3 {
		t.Fatalf("after the peeks, %d wait (%v), want 3 as before", n, err)
	}
	if h.CopyCursor != nil {
		if err := h.CopyCursor(ctx, "peek", "peek-copy"); !errors.Is(err, h.ErrCursorNotFound) {
			t.Fatalf("copy the peeked name: %v, want %v: Peek made a cursor", err, h.ErrCursorNotFound)
		}
	}
	r := newLogRelay(t, h, &logReceiver{}, LogRelayConfig{Cursor: "peek"})
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	peek("all delivered", "peek", 10)
	appendNamed(t, h, nil, "a/2")
	peek("one more appended", "peek", 10, "a/2")
	peek("a name with no cursor", "nobody", 10, "a/1", "b/1", "c/1", "a/2")
	events, err := h.Peek(ctx, "nobody", 1)
	if err != nil || len(events) != 1 || events[0].ID != first[0].ID || events[0].OrderingKey != "a" ||
		events[0].UserID != "user-1" || !events[0].CreatedAt.Equal(first[0].CreatedAt.Truncate(time.Microsecond)) {
		t.Fatalf("peek 1 for a name with no cursor: %+v (%v); want %+v", events, err, first[0])
	}
}

// A fault of one target (the topic of "invoice.sent" is missing) does not hold the
// log: the other types are delivered, and the held type's events move to the events
// table pending, their attempts not counted and the reason recorded, with the events
// of their keys behind them; the type's later events go there unattempted while its
// hold lasts. The Processor delivers them in key order once the target is back.
func testLogTargetFault(t *testing.T, h LogHarness) {
	ctx := context.Background()
	clock := NewClock(time.Now())
	var missing atomic.Bool
	missing.Store(true)
	var invoiceAttempts atomic.Int32
	rec := &logReceiver{fail: func(e outbox.Event) error {
		if e.Type != "invoice.sent" {
			return nil
		}
		invoiceAttempts.Add(1)
		if missing.Load() {
			return outbox.TargetFault(outbox.ReasonTargetMissing, "invoices", errors.New("unknown topic or partition"))
		}
		return nil
	}}
	invoices := map[string]bool{"x/1": true, "y/1": true, "z/1": true} // the rest are orders
	r := newLogRelay(t, h, rec, LogRelayConfig{MaxConcurrent: 1, Clock: clock,
		Breaker: outbox.BreakerConfig{Cooldown: time.Minute, MaxCooldown: time.Hour}})

	first := appendNamed(t, h, invoices, "a/1", "x/1", "b/1", "y/1")
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Held || st.Read != 4 || st.Failed != 0 || st.Waiting != 2 || st.Delivered != 2 {
		t.Fatalf("step: %+v; want the invoices moved (waiting), the rest delivered, nothing held", st)
	}
	for _, e := range []*outbox.Event{first[1], first[3]} {
		got, err := h.Store.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != outbox.StatusPending || got.Attempts != 0 || len(got.Errors) != 0 ||
			got.LastError != "held, attempt not counted: target missing (invoices): unknown topic or partition" {
			t.Fatalf("%s in the table: status %s, attempts %d, errors %v, last error %q; want pending, no attempt, the reason",
				e.EntityID, got.Status, got.Attempts, got.Errors, got.LastError)
		}
	}

	// Within the hold, the type's new events go to the table unattempted (z/1), and a
	// key's later order follows its invoice there (x/2).
	before := invoiceAttempts.Load()
	appendNamed(t, h, invoices, "z/1", "x/2", "c/1")
	if st, err := r.Step(ctx); err != nil || st.Waiting != 2 || st.Delivered != 1 {
		t.Fatalf("step within the hold: %+v, %v; want z/1 and x/2 moved, c/1 delivered", st, err)
	}
	if invoiceAttempts.Load() != before {
		t.Fatal("an invoice was attempted from the log within its target's hold")
	}

	missing.Store(false)
	p, err := outbox.NewProcessor(h.Store, rec, outbox.Config{Clock: clock, Logger: Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 4 { // x/1, y/1, z/1, x/2
		t.Fatalf("processor drained %d, %v; want the 4 moved events", n, err)
	}
	got := rec.got()
	if i, j := slices.Index(got, "x/1"), slices.Index(got, "x/2"); i < 0 || j < i {
		t.Fatalf("delivered %v: want x/1 before x/2", got)
	}
}

// Events of a paused type are not delivered from the log: they move to the events
// table pending, with their key's later events behind them, and wait there (counted as
// the paused backlog) until the type is resumed; then the Processor delivers them,
// each key in order, and new events come from the log again.
func testLogPausedType(t *testing.T, h LogHarness) {
	ctx := context.Background()
	pauser, ok := h.Store.(outbox.TypePauser)
	if !ok {
		t.Fatalf("the harness's store %T does not pause types", h.Store)
	}
	if err := pauser.PauseType(ctx, "invoice.sent", time.Now()); err != nil {
		t.Fatal(err)
	}
	rec := &logReceiver{}
	r := newLogRelay(t, h, rec, LogRelayConfig{})
	appendNamed(t, h, map[string]bool{"x/1": true, "y/1": true}, "x/1", "x/2", "a/1", "y/1")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Waiting != 3 {
		t.Fatalf("step: %+v, %v; want a/1 delivered, the invoices and x/2 behind x/1 moved", st, err)
	}
	p, err := outbox.NewProcessor(h.Store, rec, outbox.Config{Logger: Discard})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 0 {
		t.Fatalf("processor drained %d (%v) while the type is paused", n, err)
	}
	stats, err := h.Store.Stats(ctx, outbox.StatsQuery{Now: time.Now()})
	if err != nil || stats.PausedWaiting() != 2 || stats.Pending != 3 {
		t.Fatalf("stats while paused: %+v (%v); want 3 pending, 2 of them the paused type's", stats, err)
	}
	if _, err := pauser.ResumeType(ctx, "invoice.sent"); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Drain(ctx); err != nil || n != 3 {
		t.Fatalf("processor drained %d (%v) after the resume, want 3", n, err)
	}
	got := rec.got()
	if got[0] != "a/1" || slices.Index(got, "x/1") > slices.Index(got, "x/2") {
		t.Fatalf("delivered %v: want a/1 first, then x/1 before x/2", got)
	}
	appendNamed(t, h, nil, "x/3")
	if st, err := r.Step(ctx); err != nil || st.Delivered != 1 || st.Waiting != 0 {
		t.Fatalf("step after the resume: %+v, %v; want x/3 delivered from the log", st, err)
	}
}

// Two relays, each on a cursor of its own and scoped to its types, share the log: each
// delivers its types and passes the others by, and every event is delivered once. A
// scope naming no type is refused.
func testLogScopedToTypes(t *testing.T, h LogHarness) {
	ctx := context.Background()
	orders, invoices := &logReceiver{}, &logReceiver{}
	// One key at a time, so that the deliveries' order across keys is the log's.
	ro := newLogRelay(t, h, orders, LogRelayConfig{Cursor: "orders", Types: []string{"order.created"}, MaxConcurrent: 1})
	ri := newLogRelay(t, h, invoices, LogRelayConfig{Cursor: "invoices", Types: []string{"invoice.sent"}, MaxConcurrent: 1})
	appendNamed(t, h, map[string]bool{"b/1": true, "b/2": true}, "a/1", "b/1", "a/2", "c/1", "b/2")
	if st, err := ro.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 3 {
		t.Fatalf("orders relay: %+v, %v; want 5 read, 3 delivered", st, err)
	}
	if st, err := ri.Drain(ctx); err != nil || st.Read != 5 || st.Delivered != 2 {
		t.Fatalf("invoices relay: %+v, %v; want 5 read, 2 delivered", st, err)
	}
	if got := orders.got(); !slices.Equal(got, []string{"a/1", "a/2", "c/1"}) {
		t.Fatalf("orders relay delivered %v", got)
	}
	if got := invoices.got(); !slices.Equal(got, []string{"b/1", "b/2"}) {
		t.Fatalf("invoices relay delivered %v", got)
	}
	var fe *outbox.FieldError
	if _, err := h.NewRelay(orders, LogRelayConfig{Types: []string{""}}); !errors.As(err, &fe) || !strings.HasSuffix(fe.Field, "LogRelayConfig.Types[0]") {
		t.Fatalf("an empty type in scope: %v, want a FieldError naming LogRelayConfig.Types[0]", err)
	}
}

// One relay's cursor copied into two scopes that together cover every type: the
// scoped relays start where the unscoped one stopped, so that between the three every
// event is delivered once, none skipped and none again. A cursor made afresh would
// start at the oldest event the log holds. A copy onto an existing cursor, or from
// one that does not exist, is refused with the store's errors.
func testLogCopiedCursor(t *testing.T, h LogHarness) {
	if h.CopyCursor == nil {
		t.Skip("the harness has no CopyCursor")
	}
	ctx := context.Background()
	count := &logReceiver{} // all three relays' deliveries
	all := newLogRelay(t, h, count, LogRelayConfig{Cursor: "all", MaxConcurrent: 1})
	invoices := map[string]bool{"b/1": true, "b/2": true, "d/1": true}
	appendNamed(t, h, invoices, "a/1", "b/1")
	if st, err := all.Drain(ctx); err != nil || st.Delivered != 2 {
		t.Fatalf("the unscoped relay: %+v, %v; want 2 delivered", st, err)
	}
	appendNamed(t, h, invoices, "a/2", "b/2", "c/1")
	appendNamed(t, h, invoices, "d/1")
	for _, scope := range []string{"orders", "invoices"} {
		if err := h.CopyCursor(ctx, "all", scope); err != nil {
			t.Fatalf("copy all to %s: %v", scope, err)
		}
		if n, _, err := h.Waiting(ctx, scope); err != nil || n != 4 {
			t.Fatalf("%d events wait for the copy %s (%v); want the 4 that wait for all", n, scope, err)
		}
	}
	if n, _, err := h.Waiting(ctx, "fresh"); err != nil || n != 6 {
		t.Fatalf("%d events wait for a cursor not made yet (%v); want the whole log, 6", n, err)
	}
	if err := h.CopyCursor(ctx, "all", "orders"); !errors.Is(err, h.ErrCursorExists) {
		t.Errorf("copy onto an existing cursor: %v, want %v", err, h.ErrCursorExists)
	}
	if err := h.CopyCursor(ctx, "nobody", "later"); !errors.Is(err, h.ErrCursorNotFound) {
		t.Errorf("copy from a cursor that does not exist: %v, want %v", err, h.ErrCursorNotFound)
	}
	if n, _, err := h.Waiting(ctx, "later"); err != nil || n != 6 {
		t.Errorf("a refused copy made the cursor: %d wait for it (%v), want 6 as for no cursor", n, err)
	}
	for _, bad := range [][2]string{{"all", "all"}, {"", "x"}, {"all", ""}} {
		if err := h.CopyCursor(ctx, bad[0], bad[1]); !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("copy %q to %q: %v, want outbox.ErrInvalid", bad[0], bad[1], err)
		}
	}
	ro := newLogRelay(t, h, count, LogRelayConfig{Cursor: "orders", Types: []string{"order.created"}, MaxConcurrent: 1})
	ri := newLogRelay(t, h, count, LogRelayConfig{Cursor: "invoices", Types: []string{"invoice.sent"}, MaxConcurrent: 1})
	if st, err := ro.Drain(ctx); err != nil || st.Read != 4 || st.Delivered != 2 {
		t.Fatalf("the orders relay: %+v, %v; want 4 read, 2 delivered", st, err)
	}
	if st, err := ri.Drain(ctx); err != nil || st.Read != 4 || st.Delivered != 2 {
		t.Fatalf("the invoices relay: %+v, %v; want 4 read, 2 delivered", st, err)
	}
	delivered := map[string]int{}
	for _, name := range count.got() {
		delivered[name]++
	}
	for _, name := range []string{"a/1", "b/1", "a/2", "b/2", "c/1", "d/1"} {
		if delivered[name] != 1 {
			t.Errorf("%s delivered %d times, want once", name, delivered[name])
		}
	}
	if len(delivered) != 6 {
		t.Errorf("delivered %v, want the 6 appended", delivered)
	}
}

// A shadow run on the log is the relay with outbox.Shadow as its handler: every event
// is compared, differences are recorded, nothing moves to the events table, and the
// cursor passes the batch.
func testLogShadowRun(t *testing.T, h LogHarness) {
	ctx := context.Background()
	shadow := outbox.NewShadow(func(_ context.Context, e outbox.Event) error {
		if e.EntityID == "b/1" {
			return errors.New("the existing path sent amount 12, this event 21")
		}
		return nil
	})
	r := newLogRelay(t, h, shadow, LogRelayConfig{})
	appendNamed(t, h, nil, "a/1", "b/1", "b/2", "c/1")
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 4 || st.Failed+st.Waiting != 0 {
		t.Fatalf("shadow drain: %+v, %v; want all 4 handled, none moved", st, err)
	}
	if st, err := h.Store.Stats(ctx, outbox.StatsQuery{Now: time.Now()}); err != nil || st.Total != 0 {
		t.Fatalf("the events table after a shadow run: %+v (%v), want empty", st, err)
	}
	if n, _, err := r.Waiting(ctx); err != nil || n != 0 {
		t.Fatalf("%d events wait after the shadow run (%v)", n, err)
	}
	seen, diffs := shadow.Seen(), shadow.Differences()
	if seen != 4 || len(diffs) != 1 || diffs[0].Event.EntityID != "b/1" {
		t.Fatalf("shadow saw %d, differences %v; want 4 and b/1's", seen, diffs)
	}
}

// The log delivers in commit order: a later event of higher priority does not go
// first, as it would in the events table, where claims take priority first. The
// priority is kept, and counts again once an event is moved to the table.
func testLogCommitOrderNotPriority(t *testing.T, h LogHarness) {
	ctx := context.Background()
	appendNamed(t, h, nil, "low/1")
	high := func(name string) *outbox.Event {
		e := outbox.NewEvent("order.created", name, "user-1")
		e.Priority = 10
		if err := h.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	high("high/1")
	rec := &logReceiver{fail: func(e outbox.Event) error {
		if e.EntityID == "high/2" {
			return errors.New("503 busy")
		}
		return nil
	}}
	r := newLogRelay(t, h, rec, LogRelayConfig{MaxConcurrent: 1})
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 2 {
		t.Fatalf("drain: %+v, %v; want both delivered", st, err)
	}
	if got := rec.got(); !slices.Equal(got, []string{"low/1", "high/1"}) {
		t.Fatalf("delivered %v, want low/1 (committed first), then high/1", got)
	}
	failing := high("high/2")
	if st, err := r.Drain(ctx); err != nil || st.Failed != 1 {
		t.Fatalf("drain: %+v, %v; want high/2 failed and moved", st, err)
	}
	moved, err := h.Store.Get(ctx, failing.ID)
	if err != nil || moved.Priority != 10 {
		t.Fatalf("high/2 in the events table: priority %d (%v), want 10 kept", moved.Priority, err)
	}
}

// logGate is a Handler that holds its first delivery until opened, and records what
// it accepted; a delivery cut short by its context fails.
type logGate struct {
	entered, open chan struct{}
	once          sync.Once
	rec           logReceiver
}

func (g *logGate) Handle(ctx context.Context, e outbox.Event) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.rec.Handle(ctx, e)
}

// Stop lets the step in flight deliver and commit, and Run return nil, so that nothing
// is delivered twice; a Stop whose context ends first cancels the step, and its batch
// stays on the log for the next relay. A second Run of one relay is refused.
func testLogStopFinishesTheStep(t *testing.T, h LogHarness) {
	for _, patient := range []bool{true, false} {
		t.Run(map[bool]string{true: "patient", false: "impatient"}[patient], func(t *testing.T) {
			ctx := context.Background()
			appendNamed(t, h, nil, "a/1", "a/2", "b/1")
			g := &logGate{entered: make(chan struct{}), open: make(chan struct{})}
			r := newLogRelay(t, h, g, LogRelayConfig{MaxConcurrent: 1})
			runDone := make(chan error, 1)
			go func() { runDone <- r.Run(ctx) }()
			<-g.entered
			if err := r.Run(ctx); err == nil {
				t.Fatal("a second Run of the relay while one goes was not refused")
			}
			stopCtx, cancel := context.WithCancel(ctx)
			if !patient {
				cancel()
			}
			defer cancel()
			stopped := make(chan error, 1)
			go func() { stopped <- r.Stop(stopCtx) }()
			if patient {
				close(g.open)
			}
			err, runErr := <-stopped, <-runDone
			n, _, werr := r.Waiting(ctx)
			if werr != nil {
				t.Fatal(werr)
			}
			if patient {
				if err != nil || runErr != nil || n != 0 || len(g.rec.got()) != 3 {
					t.Fatalf("Stop %v, Run %v, %d waiting, delivered %v: want the step finished and committed", err, runErr, n, g.rec.got())
				}
				return
			}
			if !errors.Is(err, context.Canceled) || n != 3 {
				t.Fatalf("Stop %v, %d waiting: want context.Canceled and the batch left on the log", err, n)
			}
		})
	}
}

// The relay counts what it delivered in the minute of its clock, at its commit: not
// the events it moved to the events table (failed, or behind a failed one of their
// key), not those out of its scope, not those of a step that did not commit. A window
// counts whole minutes, from the one that holds its start. Retention deletes the
// minutes older than DeliveredRetention before the latest one counted.
func testLogCountsDeliveries(t *testing.T, h LogHarness) {
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 30, 0, time.UTC) // mid-minute
	clock := NewClock(t0)
	var stepCtx atomic.Pointer[context.CancelFunc] // cancels a step from its handler
	rec := &logReceiver{fail: func(e outbox.Event) error {
		if e.EntityID == "bad/1" {
			return errors.New("503 busy")
		}
		if cancel := stepCtx.Load(); cancel != nil && e.EntityID == "r/1" {
			(*cancel)() // delivered, then the step is cancelled before its commit
		}
		return nil
	}}
	r := newLogRelay(t, h, rec, LogRelayConfig{Types: []string{"order.created"}, MaxConcurrent: 1, Clock: clock})
	delivered := func(what string, since time.Time, want int64) {
		t.Helper()
		if n, err := h.Delivered(ctx, since); err != nil || n != want {
			t.Fatalf("%s: Delivered(%s) = %d (%v), want %d", what, since.Format(time.TimeOnly), n, err, want)
		}
	}
	delivered("an empty log", time.Time{}, 0)

	// bad/1 fails and moves, bad/2 follows it as pending, inv/1 is out of scope.
	appendNamed(t, h, map[string]bool{"inv/1": true}, "a/1", "bad/1", "bad/2", "b/1", "inv/1")
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 2 || st.Failed != 1 || st.Waiting != 1 {
		t.Fatalf("drain: %+v, %v; want 2 delivered, 1 failed, 1 waiting", st, err)
	}
	delivered("from the minute's middle", t0, 2)
	delivered("from its last second", t0.Add(29*time.Second), 2)
	delivered("from the next minute", t0.Add(30*time.Second), 0)

	clock.Advance(2 * time.Minute) // 03:06:30
	appendNamed(t, h, nil, "c/1", "d/1", "e/1")
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("second drain: %+v, %v; want 3 delivered", st, err)
	}
	delivered("both minutes", t0, 5)
	delivered("the minute between", t0.Add(time.Minute), 3)
	delivered("the second minute", t0.Add(2*time.Minute), 3)

	// A step cancelled after its delivery, before its commit: not counted; the batch is
	// delivered again, and counted once.
	appendNamed(t, h, nil, "r/1")
	sctx, cancel := context.WithCancel(ctx)
	stepCtx.Store(&cancel)
	if _, err := r.Step(sctx); err == nil {
		t.Fatal("a step cancelled before its commit returned no error")
	}
	stepCtx.Store(nil)
	delivered("after a step rolled back", t0, 5)
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 1 {
		t.Fatalf("drain after the rollback: %+v, %v; want r/1 delivered again", st, err)
	}
	delivered("after its batch was delivered again", t0, 6)

	// Retention: a delivery DeliveredRetention after 03:06 keeps the 03:06 minute (4)
	// and removes the 03:04 one (2).
	clock.Set(t0.Add(2*time.Minute + h.DeliveredRetention))
	appendNamed(t, h, nil, "z/1")
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 1 {
		t.Fatalf("drain a retention later: %+v, %v", st, err)
	}
	delivered("before retention", time.Time{}, 7)
	if err := h.Retain(ctx); err != nil {
		t.Fatal(err)
	}
	delivered("after retention", time.Time{}, 5)
	delivered("the last minute", clock.Now(), 1)
}

// DeliveredByMinute reads the counts Delivered sums, a bucket per minute of the
// relays' clock that has deliveries: every cursor's summed (two cursors that deliver
// the same events each count them), the failures left to the events table, from the
// minute that holds since to the minutes that start before until.
func testLogDeliveredByMinute(t *testing.T, h LogHarness) {
	if h.DeliveredByMinute == nil {
		t.Skip("the harness has no DeliveredByMinute")
	}
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 30, 0, time.UTC) // mid-minute
	m4, m5, m6 := t0.Truncate(time.Minute), t0.Truncate(time.Minute).Add(time.Minute), t0.Truncate(time.Minute).Add(2*time.Minute)
	byMinute := func(what string, since, until time.Time, want ...outbox.TimelineBucket) {
		t.Helper()
		got, err := h.DeliveredByMinute(ctx, since, until)
		if err != nil || !timelineEqual(got, want) {
			t.Fatalf("%s: DeliveredByMinute(%s, %s) = %+v (%v), want %+v", what, since.Format(time.TimeOnly), until.Format(time.TimeOnly), got, err, want)
		}
	}
	byMinute("an empty log", time.Time{}, t0.Add(time.Hour))

	clock := NewClock(t0)
	rec := &logReceiver{fail: func(e outbox.Event) error {
		if e.EntityID == "bad/1" {
			return errors.New("503 busy")
		}
		return nil
	}}
	a := newLogRelay(t, h, rec, LogRelayConfig{Cursor: "a", MaxConcurrent: 1, Clock: clock})
	// bad/1 fails and moves to the table, bad/2 follows it there: 2 delivered at 03:04.
	appendNamed(t, h, nil, "a/1", "bad/1", "bad/2", "b/1")
	if st, err := a.Drain(ctx); err != nil || st.Delivered != 2 || st.Failed != 1 {
		t.Fatalf("drain a at 03:04: %+v, %v; want 2 delivered, 1 failed", st, err)
	}
	clock.Advance(2 * time.Minute) // 03:06:30
	appendNamed(t, h, nil, "c/1", "d/1", "e/1")
	if st, err := a.Drain(ctx); err != nil || st.Delivered != 3 {
		t.Fatalf("drain a at 03:06: %+v, %v; want 3 delivered", st, err)
	}
	// Cursor b delivers the whole log at 03:06 to another destination; bad/1 and bad/2
	// go to the table's key behind the failure.
	b := newLogRelay(t, h, &logReceiver{}, LogRelayConfig{Cursor: "b", MaxConcurrent: 1, Clock: clock})
	if st, err := b.Drain(ctx); err != nil || st.Delivered != 5 {
		t.Fatalf("drain b at 03:06: %+v, %v; want 5 delivered", st, err)
	}

	both := []outbox.TimelineBucket{{Minute: m4, Completed: 2}, {Minute: m6, Completed: 3 + 5}}
	byMinute("the hour", m4, m4.Add(time.Hour), both...)
	byMinute("from 03:04's last second", t0.Add(29*time.Second), m4.Add(time.Hour), both...)
	byMinute("from 03:05", m5, m4.Add(time.Hour), both[1])
	byMinute("up to 03:06's start", m4, m6, both[0])
	byMinute("up to a second into 03:06", m4, m6.Add(time.Second), both...)
	byMinute("03:05 alone", m5, m6)
	if n, err := h.Delivered(ctx, m4); err != nil || n != 10 {
		t.Fatalf("Delivered(03:04) = %d (%v), want the minutes' sum, 10", n, err)
	}
}
