package sinktest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// EventType is the Type of every event the suite delivers, for a harness whose
// routing (a subject or topic template) depends on it.
const EventType = "sinktest.event"

// Harness is what a sink's test gives Run: the sink's name, whether its destination
// drops repeats, and how to set up one row.
type Harness struct {
	// Name names the sink in the subtests' logs and heads its column in the table:
	// "http", "nats", "kafka". Required.
	Name string
	// Dedup says the destination keeps one copy of an event however often it is
	// delivered (an HTTP receiver honouring Idempotency-Key, JetStream's duplicate
	// window on Nats-Msg-Id): the suite then checks that every event is held exactly
	// once, not merely at least once.
	Dedup bool
	// Setup sets up one row: a destination with c.Fault arranged (or ready to be, by
	// Inject) and the sink pointed at it. It is called once per row, from the row's
	// subtest, so that cleanups registered on t run when the row ends. Required.
	Setup func(t *testing.T, c Case) Setup
}

// Case is the row the suite asks a harness to set up.
type Case struct {
	Fault Fault
	// Odd is, for FaultOneRejected and FaultTooLarge, the ID of the one event of the
	// batch the fault is about (the one to reject); empty in the other rows.
	Odd string
}

// Setup is one row as a harness set it up.
//
// The row runs so: when Inject is set, a warm-up event is delivered first with no
// fault, then Inject arranges the fault (for FaultRestarted, while the batch is being
// delivered); otherwise the fault is on from the start. The suite delivers the batch
// and classifies each result, calls Fix, and delivers again what was not delivered
// and not given up until it goes through (for up to 10 s, so that a client may
// reconnect). Throughout, every event the sink called delivered must be in Held.
type Setup struct {
	// NotApplicable, when set, says why the row does not apply to this transport
	// ("HTTP has no topic to delete"). The row is then reported as "n/a: <reason>",
	// and nothing else of Setup is used.
	NotApplicable string
	// Sink is the sink under test, pointed at the destination. When it implements
	// outbox.BatchHandler, the suite delivers through HandleBatch; otherwise through
	// Handle, one event at a time.
	Sink outbox.Handler
	// Held returns the IDs of the events the destination holds, once per copy
	// (duplicates included), in any order. It must see every write the destination
	// acknowledged (read a stream to its end, not a subscription that may lag), may
	// return IDs of other rows, and may be called while the sink is delivering.
	// Required.
	Held func(ctx context.Context) ([]string, error)
	// Inject arranges the fault on a destination that has worked so far: stops the
	// proxy, deletes the topic, rotates the password. Required for FaultRestarted
	// (it restarts the destination, or sets a Proxy to ModeRestart) and
	// FaultTargetRecreated (it deletes the target); optional in the other rows.
	Inject func(ctx context.Context) error
	// Fix clears the fault: restores the proxy, creates the topic, accepts the
	// credential. Nil when there is nothing to clear (a one-off restart, a fault
	// about one event).
	Fix func(ctx context.Context) error
	// MaxMessageBytes is, for FaultTooLarge, the largest message the destination
	// takes; the suite gives the odd event a payload of one byte more. Required for
	// that row.
	MaxMessageBytes int
}

// Option changes how Run runs the suite.
type Option func(*options)

type options struct {
	parallel bool
	timeout  time.Duration
	batch    int
	settle   time.Duration // how long a row keeps delivering after Fix
	grace    time.Duration // how long a sink may take to return once its context ended
	report   func(Result)  // for the suite's own tests: the result, once all rows ran
}

// DefaultHandlerTimeout is the handler timeout of the suite's deliveries unless
// HandlerTimeout says otherwise: long enough for a local server, short enough that
// a blackholed row stays within a few seconds.
const DefaultHandlerTimeout = 500 * time.Millisecond

// Parallel runs the rows in parallel. Use it when every Setup makes a destination of
// its own (a server, a topic, a stream), so that rows cannot see each other's faults.
func Parallel() Option { return func(o *options) { o.parallel = true } }

// HandlerTimeout bounds each delivery (one event, or one batch for a BatchHandler),
// as the processor's handler timeout does. Defaults to DefaultHandlerTimeout.
func HandlerTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// BatchSize is how many events each row delivers, at least 3 (so that the odd event
// of FaultOneRejected has one on either side). Defaults to 4.
func BatchSize(n int) Option { return func(o *options) { o.batch = max(n, 3) } }

// settleFor bounds how long a row keeps delivering again after Fix (a broker client
// may take a second or two to reconnect), and each call of Held, Inject and Fix.
// Reached only when something is wrong.
const settleFor = 10 * time.Second

// returnGrace is how long a sink may take to return once its handler context ended:
// the processor waits for it, so a sink that hangs on holds its events.
const returnGrace = 2 * time.Second

// Run runs the fault matrix against the sink h sets up: one subtest per Fault. For
// each row it checks that
//
//   - the row's verdict (see RowResult.Verdict) is want[fault]: the Class, and the
//     Reason and Target where want names them;
//   - every event the sink reported delivered is held by the destination;
//   - after Fix, the events not delivered (and not given up) go through, and the
//     destination then holds each delivered event at least once, and exactly once
//     when h.Dedup;
//   - every error reads as text a store can keep: valid UTF-8, no NUL byte, at most
//     outbox.MaxErrorLength bytes.
//
// want must name every row that applies; a missing one fails the row, naming what
// the sink did. When the OUTBOX_SINKTEST_TABLE environment variable names a
// directory, the rows' results are written there once all have run (see TableEnv).
func Run(t *testing.T, h Harness, want map[Fault]Verdict, opts ...Option) {
	t.Helper()
	if h.Name == "" || h.Setup == nil {
		t.Fatal("sinktest: Harness needs a Name and a Setup")
	}
	o := options{timeout: DefaultHandlerTimeout, batch: 4, settle: settleFor, grace: returnGrace}
	for _, opt := range opts {
		opt(&o)
	}
	var mu sync.Mutex
	res := Result{Sink: h.Name, Dedup: h.Dedup}
	t.Cleanup(func() { // after every row, parallel ones included
		slices.SortFunc(res.Rows, func(a, b RowResult) int {
			return slices.Index(faults, a.Fault) - slices.Index(faults, b.Fault)
		})
		if o.report != nil {
			o.report(res)
		}
		if err := writeResult(res); err != nil {
			t.Errorf("sinktest: %v", err)
		}
	})
	for _, f := range faults {
		t.Run(string(f), func(t *testing.T) {
			if o.parallel {
				t.Parallel()
			}
			row := runRow(t, h, f, want, o)
			mu.Lock()
			res.Rows = append(res.Rows, row)
			mu.Unlock()
			switch {
			case row.NotApplicable != "":
				t.Logf("%s: n/a: %s", f, row.NotApplicable)
			case row.Error != "":
				t.Logf("%s: %s (error: %s)", f, row.Verdict, row.Error)
			default:
				t.Logf("%s: %s", f, row.Verdict)
			}
			for _, p := range row.Problems {
				t.Error(p)
			}
		})
	}
}

// row is one row being run: the state runRow's steps share.
type row struct {
	t      *testing.T
	h      Harness
	mu     sync.Mutex // problems may come from a batch's goroutine
	s      Setup
	o      options
	res    *RowResult
	seen   map[string]bool // problems already reported, so that a batch reports each once
	done   map[string]bool // IDs the sink reported delivered
	ownIDs map[string]bool // every ID this row delivers
}

func (r *row) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.seen[p] {
		r.seen[p] = true
		r.res.Problems = append(r.res.Problems, p)
	}
}

// runRow runs one row and returns its result; it fails nothing itself, so that the
// suite's own tests can check what it finds.
func runRow(t *testing.T, h Harness, f Fault, want map[Fault]Verdict, o options) RowResult {
	res := RowResult{Fault: f}
	events := make([]outbox.Event, o.batch)
	for i := range events {
		events[i] = newEvent(i)
	}
	c := Case{Fault: f}
	odd := -1
	if f.odd() {
		odd = 1 // not the first: the sink must carry on past it
		c.Odd = events[odd].ID
	}
	s := h.Setup(t, c)
	if s.NotApplicable != "" {
		res.NotApplicable = s.NotApplicable
		return res
	}
	r := &row{t: t, h: h, s: s, o: o, res: &res, seen: map[string]bool{}, done: map[string]bool{}, ownIDs: map[string]bool{}}
	for _, e := range events {
		r.ownIDs[e.ID] = true
	}
	switch {
	case s.Sink == nil || s.Held == nil:
		r.problem("Setup needs a Sink and a Held")
		return res
	case s.Inject == nil && (f == FaultRestarted || f == FaultTargetRecreated):
		r.problem("Setup.Inject is required for %s: it %s", f, map[Fault]string{
			FaultRestarted: "restarts the destination mid-batch", FaultTargetRecreated: "deletes the target"}[f])
		return res
	case f == FaultTooLarge && s.MaxMessageBytes <= 0:
		r.problem("Setup.MaxMessageBytes is required for %s", f)
		return res
	}
	if f == FaultTooLarge {
		events[odd].Payload = padding(s.MaxMessageBytes + 1)
	}
	ctx := t.Context()

	if s.Inject != nil {
		warm := newEvent(-1)
		r.ownIDs[warm.ID] = true
		if left, last := r.settle([]outbox.Event{warm}); len(left) > 0 {
			r.problem("the warm-up event, delivered before the fault, did not go through: %v", last)
			return res
		}
		if f != FaultRestarted {
			if err := r.hook(ctx, s.Inject); err != nil {
				r.problem("Inject: %v", err)
				return res
			}
		}
	}
	var mid func()
	if f == FaultRestarted {
		mid = func() {
			if err := r.hook(ctx, s.Inject); err != nil {
				r.problem("Inject (mid-batch): %v", err)
			}
		}
	}

	// The batch under the fault.
	errs := r.deliver(events, mid)
	verdicts := make([]Verdict, len(events))
	for i, err := range errs {
		verdicts[i] = Classify(err)
		r.checkText(err)
		if err == nil {
			r.done[events[i].ID] = true
		}
	}
	r.verdict(events, errs, verdicts, odd)
	if w, ok := want[f]; !ok {
		r.problem("no expectation for %s; the sink's verdict was %q (error: %s): add it to the expectations, or return Setup.NotApplicable", f, res.Verdict, res.Error)
	} else {
		res.Want = w
		if !w.matches(res.Verdict) {
			r.problem("%s: classified %q, want %q (error: %s)", f, res.Verdict, w, res.Error)
		}
	}
	r.checkHeld(ctx, false) // never delivered without the destination holding it

	// Clear the fault, and deliver again what the processor would retry.
	if s.Fix != nil {
		if err := r.hook(ctx, s.Fix); err != nil {
			r.problem("Fix: %v", err)
			return res
		}
	}
	var again []outbox.Event
	for i, e := range events {
		if c := verdicts[i].Class; c != Delivered && c != GivenUp {
			e.Attempts++
			again = append(again, e)
		}
	}
	if left, last := r.settle(again); len(left) > 0 {
		r.problem("%d of %d events were still not delivered %s after the fault was cleared; last error: %v", len(left), len(again), r.o.settle, last)
	}
	r.checkHeld(ctx, true)
	return res
}

// verdict sets the row's verdict from the batch: the odd event's in a row about one
// event (the others must have gone through), else that of the first event not
// delivered (Delivered when all were).
func (r *row) verdict(events []outbox.Event, errs []error, verdicts []Verdict, odd int) {
	set := func(i int) {
		r.res.Verdict = verdicts[i]
		if errs[i] != nil {
			r.res.Error = shorten(errs[i].Error())
		}
	}
	if odd >= 0 {
		set(odd)
		for i, v := range verdicts {
			if i != odd && v.Class != Delivered {
				r.problem("event %d of the batch (not the one at fault) was %q, want delivered: one bad message must not fail the others (error: %s)", i, v, shorten(errs[i].Error()))
			}
		}
		return
	}
	first := -1
	for i, v := range verdicts {
		switch {
		case v.Class == Delivered:
		case first < 0:
			first = i
			set(i)
		case v.Class != verdicts[first].Class && r.res.Fault != FaultRestarted:
			// Which events a restart catches is a matter of timing; elsewhere every
			// event meets the same fault and must be classified alike.
			r.problem("the batch's failures were classified differently: event %d %q, event %d %q", first, verdicts[first], i, v)
		}
	}
	if first < 0 {
		r.res.Verdict = Verdict{Class: Delivered}
	}
}

// settle delivers events until each is delivered, one is given up (a problem: the
// fault is gone), or settleFor has passed. It returns those left and the last error.
func (r *row) settle(events []outbox.Event) (left []outbox.Event, last error) {
	deadline := time.Now().Add(r.o.settle)
	pause := 20 * time.Millisecond
	for len(events) > 0 {
		errs := r.deliver(events, nil)
		var next []outbox.Event
		for i, e := range events {
			r.checkText(errs[i])
			switch Classify(errs[i]).Class {
			case Delivered:
				r.done[e.ID] = true
			case GivenUp:
				r.problem("an event was given up when delivered with no fault: %s", shorten(errs[i].Error()))
			default:
				e.Attempts++
				next = append(next, e)
				last = errs[i]
			}
		}
		events = next
		if len(events) == 0 || time.Now().After(deadline) {
			break
		}
		// Waiting for the destination (or the client's reconnect), not for a
		// backoff of the outbox's: there is no clock to move.
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Millisecond)
	}
	return events, last
}

// deliver delivers events as the processor would, each call under the handler
// timeout. mid, when set, is called part-way: between two Handle calls, or, for a
// BatchHandler, once the destination holds one event of the batch.
func (r *row) deliver(events []outbox.Event, mid func()) []error {
	ctx := r.t.Context()
	if bh, ok := r.s.Sink.(outbox.BatchHandler); ok {
		errs := make([]error, len(events))
		done := make(chan struct{})
		go func() {
			defer close(done)
			got := r.call(ctx, len(events), func(ctx context.Context) []error { return bh.HandleBatch(ctx, events) })
			if len(got) != len(events) {
				err := fmt.Errorf("sinktest: HandleBatch returned %d results for %d events", len(got), len(events))
				r.problem("%v", err)
				got = make([]error, len(events))
				for i := range got {
					got[i] = err
				}
			}
			copy(errs, got)
		}()
		if mid != nil {
			if !r.awaitAny(ctx, events, done) {
				r.res.Note = "the restart came after the batch had returned"
			}
			mid()
		}
		<-done
		return errs
	}
	errs := make([]error, len(events))
	for i, e := range events {
		if mid != nil && i == len(events)/2 {
			mid()
		}
		errs[i] = r.call(ctx, 1, func(ctx context.Context) []error { return []error{r.s.Sink.Handle(ctx, e)} })[0]
	}
	return errs
}

// call runs one delivery of n events under the handler timeout, as the processor
// does, turning a panic into an error (and a problem). A sink that does not return
// soon after its context ends is a problem too, and the row goes on without it.
func (r *row) call(ctx context.Context, n int, f func(context.Context) []error) []error {
	hctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	all := func(err error) []error { return slices.Repeat([]error{err}, n) }
	ch := make(chan []error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				err := fmt.Errorf("sinktest: the sink panicked: %v", p)
				r.problem("%v", err)
				ch <- all(err)
			}
		}()
		ch <- f(hctx)
	}()
	select {
	case errs := <-ch:
		return errs
	case <-hctx.Done():
	}
	select {
	case errs := <-ch:
		return errs
	case <-time.After(r.o.grace):
		err := fmt.Errorf("sinktest: the sink had not returned %s after its context ended", r.o.grace)
		r.problem("%v", err)
		return all(err)
	}
}

// awaitAny waits until the destination holds one of events, or done is closed (the
// batch returned first). It reports whether it saw one in time.
func (r *row) awaitAny(ctx context.Context, events []outbox.Event, done <-chan struct{}) bool {
	for {
		held, err := r.held(ctx)
		if err == nil && slices.ContainsFunc(events, func(e outbox.Event) bool { return held[e.ID] > 0 }) {
			return true
		}
		select {
		case <-done:
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// hook runs one of the harness's Inject or Fix, bounded.
func (r *row) hook(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.settle)
	defer cancel()
	return f(ctx)
}

// held reads the destination: the copies of each of this row's events.
func (r *row) held(ctx context.Context) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.settle)
	defer cancel()
	ids, err := r.s.Held(ctx)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, id := range ids {
		if r.ownIDs[id] {
			n[id]++
		}
	}
	return n, nil
}

// checkHeld checks that every event reported delivered is held; at the end of the
// row (final) it also counts copies, and checks there is one each where the
// destination deduplicates.
func (r *row) checkHeld(ctx context.Context, final bool) {
	held, err := r.held(ctx)
	if err != nil {
		r.problem("Held: %v", err)
		return
	}
	lost := 0
	for id := range r.done {
		if held[id] == 0 {
			lost++
		}
	}
	if lost > 0 {
		r.problem("%d of %d events the sink reported delivered are not at the destination", lost, len(r.done))
	}
	if !final {
		return
	}
	r.res.Duplicates = 0
	unreported := 0
	for id, n := range held {
		switch {
		case !r.done[id]:
			unreported++
		case n > 1:
			r.res.Duplicates += n - 1
		}
	}
	if unreported > 0 {
		// Not a loss: the processor would deliver or keep it, and a receiver must
		// take repeats anyway. Worth a word when the sink gave the event up.
		r.res.Note = strings.TrimPrefix(r.res.Note+fmt.Sprintf("; %d events not reported delivered are held at the destination", unreported), "; ")
	}
	if r.h.Dedup && r.res.Duplicates > 0 {
		r.problem("the destination deduplicates, yet holds %d extra copies of the row's events", r.res.Duplicates)
	}
}

// checkText checks that err's text is something a store can keep as it is.
func (r *row) checkText(err error) {
	if err == nil {
		return
	}
	s := err.Error()
	switch {
	case !utf8.ValidString(s):
		r.problem("an error's text is not valid UTF-8: %q", shorten(s))
	case strings.IndexByte(s, 0) >= 0:
		r.problem("an error's text holds a NUL byte: %q", shorten(s))
	case len(s) > outbox.MaxErrorLength:
		r.problem("an error's text is %d bytes, over outbox.MaxErrorLength (%d): %q", len(s), outbox.MaxErrorLength, shorten(s))
	}
}

// shorten keeps the start of an error's text for a report, whatever it holds.
func shorten(s string) string {
	const n = 300
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// newEvent returns an event as the processor hands it to a sink: claimed, first attempt.
func newEvent(i int) outbox.Event {
	now := outbox.Timestamp(time.Now())
	return outbox.Event{
		ID: uuid.Must(uuid.NewV7()).String(), Type: EventType,
		EntityID: fmt.Sprintf("entity-%d", i), UserID: "sinktest", IsNewRecord: true,
		Payload:   json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		Status:    outbox.StatusProcessing,
		CreatedAt: now, UpdatedAt: now, LastAttemptAt: now, Attempts: 1,
	}
}

// padding returns a JSON payload of exactly n bytes (at least 10).
func padding(n int) json.RawMessage {
	const open, close = `{"pad":"`, `"}`
	return json.RawMessage(open + strings.Repeat("x", max(n-len(open)-len(close), 0)) + close)
}
