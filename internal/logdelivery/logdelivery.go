// Package logdelivery is the part of the log layout's relays (issue 24) that does not
// depend on the database: given a batch read from a log, it groups the events by
// ordering key, hands them to the handler (a key's events one at a time, in log order),
// classifies each outcome as the Processor would, and paces the relay while the
// destination is at fault. The stores' relays (postgres.LogRelay, sqlite.LogRelay)
// read the batch, take the cursor, and write the outcomes; this package decides what
// the outcomes are.
package logdelivery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/column"
	"github.com/fitiq/outbox/internal/suspicion"
)

// Config is what a Deliverer needs of its relay's configuration. The relay fills the
// defaults before it builds one: New takes the fields as given.
type Config struct {
	// MaxConcurrent is how many groups Handle is called for at once.
	MaxConcurrent int
	// HandlerTimeout bounds one Handle or HandleBatch call; zero or negative, none.
	HandlerTimeout time.Duration
	// Retry schedules the second attempt of a failed event, and its MaxAttempts is the
	// budget of an event that sets none.
	Retry outbox.RetryPolicy
	// Breaker tells destination faults from event failures (IsUnavailable, which must
	// be set) and paces holds (Cooldown doubling to MaxCooldown). A negative Threshold
	// disables holds.
	Breaker outbox.BreakerConfig
	// Clock gives the time of failures and of their next attempt.
	Clock outbox.Clock
	// Logger receives the failures, panics and holds.
	Logger *slog.Logger
	// Observers are told what the relay does, as a Processor's are (see
	// outbox.Config.Observers): each read of the log (Read) as a claim, each attempt
	// with its outcome, and, for a BreakerObserver, each destination fault and each
	// hold of the whole destination (target "") and its end.
	Observers []outbox.Observer
}

// Kind is how one event's delivery went.
type Kind int

const (
	// NotAttempted: the handler was not called for it (its key is blocked, or an
	// earlier event of its group failed, or the batch was held or interrupted).
	NotAttempted Kind = iota
	// Delivered: the handler took it.
	Delivered
	// Failed: the event's own failure; it leaves the log for the events table.
	Failed
	// Held: the destination's fault; the batch is held and nothing moves.
	Held
	// Interrupted: the delivery's context ended while it ran.
	Interrupted
	// TargetHeld: a fault of the one target of the destination that the event goes
	// to (a DestinationError with a Target: a missing topic, say), or the event's type
	// is held at such a target and not yet due for a probe, in which case the handler
	// was not called. It leaves the log for the events table, pending and with its
	// attempt not counted, where the Processor holds the target; the batch goes on.
	TargetHeld
)

// Result is one event's outcome.
type Result struct {
	Kind Kind
	Err  error
	// At is when it failed or was held.
	At time.Time
	// Attempted, for TargetHeld, says that the handler was called (a probe, or the
	// first event to meet the fault) rather than the event sent on unattempted.
	Attempted bool
	// Next, for Failed, is when it is due again; zero gives it up.
	Next time.Time
}

// Deliverer delivers a relay's batches through its handler. It is safe for concurrent
// use: a relay that steps several shards at once (postgres.LogRelayConfig.Concurrency)
// calls Deliver, Limit, Hold and Answered from each step, and the hold state and the
// suspected-fault memory they share are guarded.
type Deliverer struct {
	handler outbox.Handler
	cfg     Config

	suspects suspicion.Suspicion

	mu         sync.Mutex
	holdDelay  time.Duration          // the last hold's wait; zero once the destination answered
	probing    bool                   // the destination was at fault: read one event next
	heldReason string                 // why the destination is held, while holdDelay is set
	targets    map[string]*targetHold // by event type: the types held at a faulty target
	nTargets   atomic.Int32           // len(targets), read without the lock per event
}

// targetHold is an event type held at a faulty target of the destination.
type targetHold struct {
	target, reason string
	err            error         // the fault, for the events sent on unattempted
	delay          time.Duration // the last wait: Cooldown, doubled per fault in a row
	probeAt        time.Time     // until then, the type's events are not attempted
}

// New returns a Deliverer of handler, configured by cfg with its defaults filled.
func New(handler outbox.Handler, cfg Config) *Deliverer {
	return &Deliverer{handler: handler, cfg: cfg}
}

// Groups splits a batch into its keys' runs, in the order each key first appears: the
// indexes of a key's events in log order, and an event without a key alone. keys lists
// the distinct ordering keys.
//
// A relay calls it on every batch, of up to thousands of events, so it allocates a few
// slices per batch rather than one per group: the groups share one array of indexes,
// and the map of keys is made only for a batch with keys.
func Groups(events []outbox.Event) (groups [][]int, keys []string) {
	of := make([]int, len(events)) // the group of each event
	var (
		sizes []int
		at    map[string]int
	)
	for i := range events {
		k := events[i].OrderingKey
		if k == "" {
			of[i] = len(sizes)
			sizes = append(sizes, 1)
			continue
		}
		if at == nil {
			at = make(map[string]int, len(events)-i)
		}
		g, ok := at[k]
		if !ok {
			g = len(sizes)
			at[k] = g
			sizes = append(sizes, 0)
			keys = append(keys, k)
		}
		of[i] = g
		sizes[g]++
	}
	// Lay the groups out one after another in one array, then fill each in log order.
	all := make([]int, len(events))
	groups = make([][]int, len(sizes))
	start := 0
	for g, n := range sizes {
		groups[g] = all[start : start : start+n]
		start += n
	}
	for i, g := range of {
		groups[g] = append(groups[g], i)
	}
	return groups, keys
}

// InScope returns the events of a batch whose type is one of types (all of them when
// types is empty), in order: what a relay scoped to types delivers. The others are
// passed by: the cursor moves past them, and a relay of another scope delivers them.
// A row with no type (written by SQL, breaking the contract) is in no scope, so every
// relay takes it, to give it up: were it passed by, no relay would, and retention
// would drop it unseen. The first relay to move it to the events table wins; the
// others' moves are left out as duplicates.
func InScope(events []outbox.Event, types []string) []outbox.Event {
	if len(types) == 0 {
		return events
	}
	out := make([]outbox.Event, 0, len(events))
	for _, e := range events {
		if e.Type == "" || slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// Deliverable is what a relay delivers of a batch's groups (Groups' answer): none of
// a group whose ordering key is blocked (it has unfinished events in the events table,
// and its events join them there), and of the others each up to its first event of a
// paused type. The events left out stay NotAttempted, so Summarize moves them to the
// events table pending: a paused type's events wait there, counted, until it is resumed,
// with the later events of their key behind them.
func Deliverable(events []outbox.Event, groups [][]int, blocked, paused map[string]bool) [][]int {
	if len(blocked) == 0 && len(paused) == 0 {
		return groups
	}
	out := make([][]int, 0, len(groups))
	for _, g := range groups {
		if k := events[g[0]].OrderingKey; k != "" && blocked[k] {
			continue
		}
		n := len(g)
		if len(paused) > 0 {
			n = slices.IndexFunc(g, func(i int) bool { return paused[events[i].Type] })
			if n < 0 {
				n = len(g)
			}
		}
		if n > 0 {
			out = append(out, g[:n])
		}
	}
	return out
}

// Deliver marks every event of the batch as in its first attempt (processing, one
// attempt, last attempted and updated now) and delivers the given groups of it (a
// subset of Groups' answer: the keys not blocked): through HandleBatch when the
// handler is an outbox.BatchHandler, one event of each group per call; otherwise
// through Handle, MaxConcurrent groups at once. A group's events go one after another
// and stop at the group's first failure; every group stops once one is held or
// interrupted. The results are indexed as events; the events of groups not given, and
// those not reached, are NotAttempted.
func (d *Deliverer) Deliver(ctx context.Context, events []outbox.Event, groups [][]int) []Result {
	now := d.cfg.Clock.Now()
	for i := range events {
		events[i].Status, events[i].Attempts = outbox.StatusProcessing, 1
		events[i].LastAttemptAt, events[i].UpdatedAt = now, now
	}
	results := make([]Result, len(events))
	if bh, ok := d.handler.(outbox.BatchHandler); ok {
		d.deliverWaves(ctx, bh, events, groups, results)
	} else {
		d.deliverEach(ctx, events, groups, results)
	}
	return results
}

// deliverEach delivers groups through Handle: MaxConcurrent groups at once, a group's
// events one after another, each stopping at its first failure; every group stops
// starting deliveries once one is held or interrupted.
func (d *Deliverer) deliverEach(ctx context.Context, events []outbox.Event, groups [][]int, results []Result) {
	if len(groups) == 0 {
		return
	}
	// The workers take the groups in order by a shared count rather than from a
	// channel, which would hand every group from one goroutine to another. And they
	// are started as they are needed rather than MaxConcurrent at once: a worker about
	// to deliver a group starts one more unless one is already starting (or the limit
	// is reached), so that a handler that blocks never holds back the groups after its
	// own, while one that returns at once is not paid a goroutine per group.
	var (
		stop     atomic.Bool
		next     atomic.Int64
		workers  atomic.Int64 // started, or starting
		starting atomic.Bool  // a worker has been started and has not yet taken a group
		wg       sync.WaitGroup
	)
	limit := int64(min(max(d.cfg.MaxConcurrent, 1), len(groups)))
	var work func()
	work = func() {
		starting.Store(false)
		for !stop.Load() && ctx.Err() == nil {
			k := int(next.Add(1)) - 1
			if k >= len(groups) {
				return
			}
			if k+1 < len(groups) && workers.Load() < limit && starting.CompareAndSwap(false, true) {
				workers.Add(1)
				wg.Go(work)
			}
			for _, i := range groups[k] {
				if stop.Load() || ctx.Err() != nil {
					break
				}
				if r, skip := d.undeliverable(&events[i]); skip {
					results[i] = r
					break
				}
				n := d.suspects.Start()
				start := d.startTimer()
				err := d.call(ctx, events[i])
				results[i] = d.classify(ctx, &events[i], n, err, d.since(start))
				if k := results[i].Kind; k != Delivered {
					if k == Held || k == Interrupted {
						stop.Store(true)
					}
					break
				}
			}
		}
	}
	workers.Store(1)
	starting.Store(true)
	wg.Go(work)
	wg.Wait()
}

// deliverWaves delivers groups through HandleBatch: each call carries the next event of
// every group still going, so that a key has one event in flight at a time.
func (d *Deliverer) deliverWaves(ctx context.Context, bh outbox.BatchHandler, events []outbox.Event, groups [][]int, results []Result) {
	next := make([]int, len(groups))
	active := make([]int, len(groups))
	for g := range groups {
		active[g] = g
	}
	for len(active) > 0 && ctx.Err() == nil {
		going := active[:0]
		for _, g := range active {
			i := groups[g][next[g]]
			if r, skip := d.undeliverable(&events[i]); skip {
				results[i] = r // its group stops here
				continue
			}
			going = append(going, g)
		}
		if active = going; len(active) == 0 {
			return
		}
		send := make([]outbox.Event, len(active))
		starts := make([]uint64, len(active))
		for j, g := range active {
			send[j] = events[groups[g][next[g]]]
			starts[j] = d.suspects.Start()
		}
		start := d.startTimer()
		errs := d.callBatch(ctx, bh, send)
		took := d.since(start)
		var still []int
		stop := false
		for j, g := range active {
			i := groups[g][next[g]]
			results[i] = d.classify(ctx, &events[i], starts[j], errs[j], took)
			switch results[i].Kind {
			case Delivered:
				if next[g]++; next[g] < len(groups[g]) {
					still = append(still, g)
				}
			case Held, Interrupted:
				stop = true
			}
		}
		if stop {
			return
		}
		active = still
	}
}

func (d *Deliverer) handlerContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if d.cfg.HandlerTimeout > 0 {
		return context.WithTimeout(ctx, d.cfg.HandlerTimeout)
	}
	return context.WithCancel(ctx)
}

// call runs the handler for one event with the handler timeout, a panic becoming an
// error.
func (d *Deliverer) call(ctx context.Context, e outbox.Event) (err error) {
	hctx, cancel := d.handlerContext(ctx)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
			d.cfg.Logger.Error("handler panicked", "event_id", e.ID, "type", e.Type, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	err = d.handler.Handle(hctx, e)
	if err != nil && hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = fmt.Errorf("handler timed out after %s: %w", d.cfg.HandlerTimeout, err)
	}
	return err
}

// callBatch runs HandleBatch with the handler timeout: one error per event, a panic or
// a wrong count becoming the error of each.
func (d *Deliverer) callBatch(ctx context.Context, bh outbox.BatchHandler, events []outbox.Event) (errs []error) {
	hctx, cancel := d.handlerContext(ctx)
	defer cancel()
	every := func(err error) []error {
		errs := make([]error, len(events))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer func() {
		if p := recover(); p != nil {
			d.cfg.Logger.Error("batch handler panicked", "panic", p, "stack", string(debug.Stack()))
			errs = every(fmt.Errorf("handler panicked: %v", p))
		}
	}()
	errs = bh.HandleBatch(hctx, events)
	if len(errs) != len(events) {
		return every(fmt.Errorf("outbox: batch handler returned %d results for %d events", len(errs), len(events)))
	}
	if hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		for i, err := range errs {
			if err != nil {
				errs[i] = fmt.Errorf("handler timed out after %s: %w", d.cfg.HandlerTimeout, err)
			}
		}
	}
	return errs
}

// classify turns a handler's result into what the step does with the event, as the
// Processor's outcome does: delivered; interrupted (the step was cancelled); held (the
// destination's fault, unless holds are disabled); or failed, due again under the Retry
// policy, or given up when Permanent or out of attempts. The observers are told, with
// took, the handler's time (a HandleBatch call's for each of its events).
func (d *Deliverer) classify(ctx context.Context, e *outbox.Event, n uint64, err error, took time.Duration) Result {
	r := d.result(ctx, e, n, err)
	if len(d.cfg.Observers) > 0 {
		d.observe(e, r, took)
	}
	return r
}

func (d *Deliverer) result(ctx context.Context, e *outbox.Event, n uint64, err error) Result {
	if err == nil {
		d.suspects.Succeeded(n, e.ID)
		d.releaseType(e.Type)
		return Result{Kind: Delivered}
	}
	if ctx.Err() != nil {
		return Result{Kind: Interrupted, Err: err}
	}
	now := d.cfg.Clock.Now()
	if d.cfg.Breaker.Threshold >= 0 {
		de := destinationError(err)
		if de != nil && !de.Suspected && de.Target != "" {
			d.holdTarget(e, de, err, now)
			return Result{Kind: TargetHeld, Err: err, At: now, Attempted: true}
		}
		if de != nil && (!de.Suspected || !d.suspects.EventsFault(e.ID)) ||
			de == nil && !outbox.IsPermanent(err) && d.cfg.Breaker.IsUnavailable(err) {
			return Result{Kind: Held, Err: err, At: now}
		}
	}
	// The event's own failure: its target answered.
	d.releaseType(e.Type)
	r := Result{Kind: Failed, Err: err, At: now}
	if outbox.IsPermanent(err) || e.EffectiveMaxAttempts(d.cfg.Retry.MaxAttempts) <= 1 {
		d.cfg.Logger.Error("event failed and given up; moved to the events table", "event_id", e.ID, "type", e.Type, "err", err)
		return r
	}
	r.Next = d.cfg.Retry.NextAttemptAt(now, 1)
	if after, ok := outbox.RetryAfterDelay(err); ok && now.Add(after).After(r.Next) {
		r.Next = now.Add(after)
	}
	d.cfg.Logger.Warn("delivery failed; event moved to the events table, to be retried there", "event_id", e.ID, "type", e.Type,
		"err", err, "retry_at", r.Next)
	return r
}

// startTimer and since time a handler's call for the observers, and cost nothing
// without them.
func (d *Deliverer) startTimer() time.Time {
	if len(d.cfg.Observers) == 0 {
		return time.Time{}
	}
	return time.Now()
}

func (d *Deliverer) since(start time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return time.Since(start)
}

// observe tells the observers of one attempt, in the Processor's terms: a held or
// interrupted attempt is Released (not counted), a held one also unavailable; a
// failed one is Failed, given up when it has no next attempt.
func (d *Deliverer) observe(e *outbox.Event, r Result, took time.Duration) {
	o := outbox.Outcome{ID: e.ID}
	switch r.Kind {
	case Delivered:
		o.Result = outbox.Delivered
	case Failed:
		o.Result, o.Error, o.NextAttemptAt = outbox.Failed, ErrorText(r.Err), r.Next
	case Held, TargetHeld:
		o.Result, o.Error = outbox.Released, HeldText(r.Err)
		for _, ob := range d.cfg.Observers {
			if bo, ok := ob.(outbox.BreakerObserver); ok {
				bo.ObserveUnavailable(*e, r.Err)
			}
		}
	case Interrupted:
		o.Result = outbox.Released
	default:
		return
	}
	for _, ob := range d.cfg.Observers {
		ob.ObserveDelivery(*e, o, took)
	}
}

// HeldText is the error recorded on an event whose attempt did not count because the
// destination, or its target, was at fault (err), as the Processor records it.
func HeldText(err error) string {
	return ErrorText(fmt.Errorf("held, attempt not counted: %w", err))
}

// undeliverable reports whether e is not to be handed to the handler, and if so its
// result: given up when its row could not be read in full, or sent on to the events
// table when its type is held at a faulty target.
func (d *Deliverer) undeliverable(e *outbox.Event) (Result, bool) {
	if e.Unusable != "" {
		return d.unusable(e), true
	}
	return d.heldType(e)
}

// unusable gives up an event whose row the log could not read in full (a writer in
// another language broke the contract; see outbox.Event.Unusable), as the Processor
// does: no attempt can succeed until the row is mended, so it moves to the events
// table given up, with the reason, where an operator mends and retries it. The
// destination is not involved, so the breaker and the holds hear nothing.
func (d *Deliverer) unusable(e *outbox.Event) Result {
	// The events table's CHECKs refuse an empty type or entity ID, and a move that
	// failed would stop the cursor at the row: it moves under a placeholder, its reason
	// naming what was written.
	e.Type, e.EntityID = cmp.Or(e.Type, column.EmptyPlaceholder), cmp.Or(e.EntityID, column.EmptyPlaceholder)
	r := Result{Kind: Failed, Err: outbox.Permanent(errors.New("unusable row: " + e.Unusable)), At: d.cfg.Clock.Now()}
	d.cfg.Logger.Error("event given up: its row breaks the SQL contract (docs/any-language.md); moved to the events table, mend it there, then retry it",
		"event_id", e.ID, "seq", e.Seq, "type", e.Type, "err", r.Err)
	if len(d.cfg.Observers) > 0 {
		d.observe(e, r, 0)
	}
	return r
}

// heldType reports whether e's type is held at a faulty target and not yet due for a
// probe, and if so the result that sends e on to the events table unattempted.
func (d *Deliverer) heldType(e *outbox.Event) (Result, bool) {
	if d.nTargets.Load() == 0 {
		return Result{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.targets[e.Type]
	now := d.cfg.Clock.Now()
	if h == nil || !now.Before(h.probeAt) {
		return Result{}, false
	}
	return Result{Kind: TargetHeld, Err: h.err, At: now}, true
}

// holdTarget holds e's type at the target de names, after a fault at now: for
// Cooldown after the first fault, twice as long after each fault in a row, at most
// MaxCooldown. The first fault is reported to the observers.
func (d *Deliverer) holdTarget(e *outbox.Event, de *outbox.DestinationError, err error, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.targets[e.Type]
	switch {
	case h == nil:
		if d.targets == nil {
			d.targets = map[string]*targetHold{}
		}
		h = &targetHold{target: de.Target, reason: cmp.Or(de.Reason, outbox.ReasonTargetMissing), delay: d.cfg.Breaker.Cooldown}
		d.targets[e.Type] = h
		d.nTargets.Store(int32(len(d.targets)))
		d.cfg.Logger.Error("target held: its events leave the log for the events table unattempted, where the processor holds them, until a probe gets through",
			"target", h.target, "reason", h.reason, "type", e.Type, "err", err)
		for _, ob := range d.cfg.Observers {
			if bo, ok := ob.(outbox.BreakerObserver); ok {
				bo.ObserveHold(h.target, h.reason, true)
			}
		}
	case !now.Before(h.probeAt):
		h.delay = min(2*h.delay, d.cfg.Breaker.MaxCooldown) // a probe that failed
	}
	h.err, h.probeAt = err, now.Add(h.delay)
}

// releaseType ends the hold of typ's target, if any, once an event of the type was
// answered (delivered, or failed for its own reason).
func (d *Deliverer) releaseType(typ string) {
	if d.nTargets.Load() == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.targets[typ]
	if h == nil {
		return
	}
	delete(d.targets, typ)
	d.nTargets.Store(int32(len(d.targets)))
	d.cfg.Logger.Info("target answers again: its events are delivered from the log", "target", h.target, "reason_was", h.reason, "type", typ)
	for _, ob := range d.cfg.Observers {
		if bo, ok := ob.(outbox.BreakerObserver); ok {
			bo.ObserveHold(h.target, h.reason, false)
		}
	}
}

// Read tells the observers of a read of the log that returned n events and took took,
// as a Processor's claim.
func (d *Deliverer) Read(n int, took time.Duration) {
	for _, ob := range d.cfg.Observers {
		ob.ObserveClaim(n, took)
	}
}

func (d *Deliverer) observeHold(reason string, held bool) {
	for _, ob := range d.cfg.Observers {
		if bo, ok := ob.(outbox.BreakerObserver); ok {
			bo.ObserveHold("", reason, held)
		}
	}
}

// destinationError is the DestinationError in err's chain, unless a Permanent mark
// wraps it (the outer mark wins, as for the Processor).
func destinationError(err error) *outbox.DestinationError {
	var de *outbox.DestinationError
	if !errors.As(err, &de) {
		return nil
	}
	if outbox.IsPermanent(err) && !outbox.IsPermanent(de.Err) {
		return nil
	}
	return de
}

// Move is an event that leaves the log for the events table: failed, with its
// attempt; held at a faulty target, pending with its attempt not counted; or pending
// behind an earlier event of its key.
type Move struct {
	Index int // into the batch's events
	// Failed is the event's result when it is Failed or TargetHeld; nil when it only
	// follows its key.
	Failed *Result
}

// Summary is what a batch's results add up to.
type Summary struct {
	// Delivered is how many events the handler took.
	Delivered int
	// Fault is the first held event's error; non-nil means the batch is held.
	Fault error
	// Answered is true when the destination answered one event at least (delivered,
	// or failed for the event's own reason): it is not at fault.
	Answered bool
	// Moves lists the events that leave the log, in log order within each key and in
	// groups' order: a key's first failure, then the key's events after it; every
	// event of a group that was not delivered (a blocked key) pending. Empty when the
	// batch is held.
	Moves []Move
}

// Summarize adds up a batch's results over all of its groups (Groups' answer, blocked
// keys included).
func Summarize(groups [][]int, results []Result) Summary {
	var s Summary
	for i := range results {
		switch results[i].Kind {
		case Held:
			if s.Fault == nil {
				s.Fault = results[i].Err
			}
		case Delivered:
			s.Delivered++
			s.Answered = true
		case Failed:
			s.Answered = true
		}
	}
	if s.Fault != nil {
		return s
	}
	for _, g := range groups {
		failed := false
		for _, i := range g {
			switch {
			case !failed && results[i].Kind == Delivered:
			case !failed && (results[i].Kind == Failed || results[i].Kind == TargetHeld):
				failed = true
				s.Moves = append(s.Moves, Move{Index: i, Failed: &results[i]})
			default:
				// Behind a failure of its key here, or behind its key's events in the table.
				s.Moves = append(s.Moves, Move{Index: i})
			}
		}
	}
	return s
}

// Limit is how many events the next step should read: batchSize, or one while the
// destination is at fault (a probe).
func (d *Deliverer) Limit(batchSize int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probing {
		return 1
	}
	return batchSize
}

// Hold records that the destination held a batch of n events for fault, and returns
// how long the relay waits before it reads again: Cooldown after the first hold, twice
// the last wait after each hold in a row, at most MaxCooldown. The next read is a probe of one event (Limit). The first hold in a row
// is reported to the observers as a hold of the whole destination.
func (d *Deliverer) Hold(fault error, n int) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.holdDelay == 0 {
		d.holdDelay = d.cfg.Breaker.Cooldown
		d.heldReason = outbox.ReasonUnreachable
		if de := destinationError(fault); de != nil {
			d.heldReason = cmp.Or(de.Reason, d.heldReason)
		}
		d.observeHold(d.heldReason, true)
	} else {
		d.holdDelay = min(2*d.holdDelay, d.cfg.Breaker.MaxCooldown)
	}
	d.probing = true
	d.cfg.Logger.Warn("destination at fault: batch held, cursor kept, attempts not spent; it will be read again",
		"err", fault, "reason", d.heldReason, "events", n, "retry_in", d.holdDelay)
	return d.holdDelay
}

// Answered records that the destination answered a committed batch: holds start again
// from Cooldown, and reads are whole batches. A hold's end is reported to the
// observers.
func (d *Deliverer) Answered() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.holdDelay != 0 {
		d.cfg.Logger.Info("destination answers again: delivery from the log resumes", "reason_was", d.heldReason)
		d.observeHold(d.heldReason, false)
	}
	d.holdDelay, d.probing, d.heldReason = 0, false, ""
}

// ErrorText is err's text as the events table keeps it (outbox.CleanError's, as the
// Processor records it).
func ErrorText(err error) string { return outbox.CleanError(err).Error() }

// HeadPollIdleAfter is how long a relay's steps find nothing before it starts slowing
// its head polls, and how much longer each further doubling waits: long beside the
// gaps between events of even a trickle (at 10 events a second, a second without one
// comes once in about 22,000 gaps), short beside an idle night.
const HeadPollIdleAfter = time.Second

// HeadPollEvery is an idle relay's head-poll interval after idle without events:
// every, doubled for every HeadPollIdleAfter idle beyond the first, up to most (never
// below every). Head polls off (every <= 0) stay off.
func HeadPollEvery(idle, every, most time.Duration) time.Duration {
	if every <= 0 {
		return every
	}
	d := every
	for past := idle - HeadPollIdleAfter; past >= 0 && d < most; past -= HeadPollIdleAfter {
		d *= 2
	}
	return max(min(d, most), every)
}
