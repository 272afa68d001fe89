package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/fitiq/outbox/internal/suspicion"
)

// Processor claims due events from a Store in batches, delivers them through a Handler
// a few at a time, and records each outcome: completed, retried later with backoff, or
// given up. Run it in the background with Start and Stop, or drive it step by step with
// ProcessBatch and Drain.
type Processor struct {
	store   Store
	handler Handler
	cfg     Config
	log     *slog.Logger

	trigger  chan struct{}
	brk      *breaker
	holds    *targetHolds
	suspects suspicion.Suspicion
	retries  retryTimes

	mu      sync.Mutex
	running *run
}

// run is one Start…Stop lifetime.
type run struct {
	stopOnce   sync.Once          //
	soft       chan struct{}      // closed by Stop: claim nothing more, start no delivery
	hard       context.Context    // cancelled when draining must end: in-flight deliveries abort
	cancelHard context.CancelFunc //
	done       chan struct{}      // closed when every goroutine of the run has returned
}

// NewProcessor returns a processor for store that delivers through handler. It fails
// when cfg holds a value that cannot work, naming the field.
func NewProcessor(store Store, handler Handler, cfg Config) (*Processor, error) {
	if store == nil {
		return nil, fieldError("store", "must not be nil")
	}
	if handler == nil {
		return nil, fieldError("handler", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Processor{
		store:   BoundStore(store, cfg.RoundTripTimeout, cfg.Logger.With("component", "outbox.processor", "owner", cfg.Owner)),
		handler: handler,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "outbox.processor", "owner", cfg.Owner),
		trigger: make(chan struct{}, 1),
		brk:     newBreaker(cfg.Breaker),
		holds:   newTargetHolds(cfg.Breaker),
	}, nil
}

// Config returns the processor's configuration with defaults filled in.
func (p *Processor) Config() Config { return p.cfg }

// Start runs the processor in the background until Stop is called. Cancelling ctx
// stops it too, without draining: in-flight deliveries see their context cancelled
// and their events are released. Starting a running processor is an error; a stopped
// one may be started again.
func (p *Processor) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running != nil {
		return errors.New("outbox: processor already started")
	}
	r := &run{soft: make(chan struct{}), done: make(chan struct{})}
	r.hard, r.cancelHard = context.WithCancel(ctx)
	p.running = r

	var wake <-chan struct{}
	cancelWake := func() {}
	if n, ok := p.store.(Notifier); ok {
		wake, cancelWake = n.Subscribe(p.cfg.UserID)
	}
	var wg sync.WaitGroup
	for range p.cfg.BatchesInFlight {
		wg.Go(func() { p.loop(r, wake) })
	}
	if p.cfg.CleanupInterval > 0 {
		wg.Go(func() { p.cleanupLoop(r) })
	}
	go func() {
		wg.Wait()
		cancelWake()
		r.cancelHard()
		// The run is over, whether Stop ended it or its ctx did: the processor may start again.
		p.mu.Lock()
		if p.running == r {
			p.running = nil
		}
		p.mu.Unlock()
		close(r.done)
	}()
	p.log.Info("processor started", "user_id", p.cfg.UserID, "batch_size", p.cfg.BatchSize,
		"max_concurrent", p.cfg.MaxConcurrent, "poll_interval", p.cfg.PollInterval)
	return nil
}

// Stop stops claiming, lets in-flight deliveries finish and records their outcomes,
// releases claimed events it had not started, and returns once every goroutine has
// exited. If ctx ends first, in-flight deliveries are cancelled (their events are
// released, to be delivered again) and Stop returns ctx's error after they return.
// Stopping a processor that is not running returns ErrClosed.
func (p *Processor) Stop(ctx context.Context) error {
	p.mu.Lock()
	r := p.running
	p.mu.Unlock()
	if r == nil {
		return ErrClosed
	}
	r.stopOnce.Do(func() { close(r.soft) })
	var err error
	select {
	case <-r.done:
	case <-ctx.Done():
		err = ctx.Err()
		r.cancelHard()
		<-r.done
	}
	p.log.Info("processor stopped")
	return err
}

// Trigger asks for a cycle now instead of at the next poll (after a user
// action, say). A trigger for a user the processor does not serve is
// ignored; an empty userID always triggers. It never blocks.
func (p *Processor) Trigger(userID string) {
	if p.cfg.UserID != "" && userID != "" && userID != p.cfg.UserID {
		return
	}
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

func (p *Processor) loop(r *run, wake <-chan struct{}) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	errDelay := time.Duration(0)
	for {
		select {
		case <-r.soft:
			return
		case <-r.hard.Done():
			return
		default:
		}
		n, err := p.processBatch(r.hard, r.soft)
		wait := p.idleWait()
		switch {
		case err != nil && r.hard.Err() == nil:
			// The store is failing (database down, connection cut): back off, but not past the poll interval.
			errDelay = min(max(2*errDelay, 50*time.Millisecond), p.cfg.PollInterval)
			wait = errDelay
			p.log.Error("processing cycle failed", "err", err, "retry_in", wait)
		case n > 0:
			// Look again at once: more may be due, and completing the head of an ordering
			// key has just made the next event of that key claimable.
			errDelay = 0
			if n >= p.cfg.BatchSize && p.cfg.BatchesInFlight > 1 {
				p.Trigger("") // a full batch: more are probably due, so an idle sibling loop claims the next one meanwhile
			}
			continue
		default:
			errDelay = 0
		}
		if wait <= 0 {
			continue // a retry fell due while the batch ran
		}
		timer.Reset(wait)
		select {
		case <-r.soft:
			return
		case <-r.hard.Done():
			return
		case <-timer.C:
		case <-p.trigger:
		case <-wake:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// idleWait is how long an idle loop sleeps: the poll interval, cut short by the
// earliest retry this processor scheduled and by the open circuit's next probe, so
// that neither waits for the next poll.
func (p *Processor) idleWait() time.Duration {
	now := p.cfg.Clock.Now()
	wait := p.cfg.PollInterval
	next, passed := p.retries.next(now)
	if passed {
		return 0 // a retry fell due while the batch ran: look at once
	}
	if !next.IsZero() {
		wait = min(wait, next.Sub(now))
	}
	for _, probe := range []time.Time{p.brk.nextProbe(), p.holds.nextProbe()} {
		if !probe.IsZero() {
			wait = min(wait, max(probe.Sub(now), time.Millisecond))
		}
	}
	return wait
}

func (p *Processor) cleanupLoop(r *run) {
	ticker := time.NewTicker(p.cfg.CleanupInterval)
	defer ticker.Stop()
	for {
		if _, err := p.Cleanup(r.hard); err != nil && r.hard.Err() == nil {
			p.log.Error("cleanup failed", "err", err)
		}
		select {
		case <-r.soft:
			return
		case <-r.hard.Done():
			return
		case <-ticker.C:
		}
	}
}

// Cleanup deletes completed events older than the retention period, in batches, and
// returns how many it deleted. The running processor calls it every CleanupInterval.
func (p *Processor) Cleanup(ctx context.Context) (int, error) {
	const batch = 1000
	before := p.cfg.Clock.Now().Add(-p.cfg.Retention)
	total := 0
	for {
		n, err := p.store.DeleteCompleted(ctx, before, batch)
		total += n
		if err != nil {
			return total, fmt.Errorf("outbox: cleanup: %w", err)
		}
		if n < batch {
			if total > 0 {
				p.log.Info("cleaned up completed events", "deleted", total, "completed_before", before)
			}
			return total, nil
		}
	}
}

// ProcessBatch claims one batch of due events, delivers them, records the outcomes,
// and returns how many events it claimed. It is what the background loop runs each
// cycle; tests and command-line tools call it directly. Cancelling ctx aborts
// deliveries in flight (their events are released).
func (p *Processor) ProcessBatch(ctx context.Context) (int, error) {
	return p.processBatch(ctx, nil)
}

// Drain runs ProcessBatch until no event is due, and returns how many it claimed in all.
// Events waiting out a retry delay are not due; Drain does not wait for them.
func (p *Processor) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := p.ProcessBatch(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

func (p *Processor) processBatch(ctx context.Context, soft <-chan struct{}) (int, error) {
	now := p.cfg.Clock.Now()
	limit, probe := p.cfg.BatchSize, false
	var skip []string
	if p.brk.enabled() {
		// An open circuit claims nothing until its cooldown is over, then one event.
		if limit, probe = p.brk.admit(now, limit); limit == 0 {
			return 0, nil
		}
		skip = p.holds.skipTypes(now) // the types whose target is held wait where they are
	}
	started := time.Now()
	events, err := p.store.Claim(ctx, ClaimParams{
		Owner:              p.cfg.Owner,
		Now:                now,
		LeaseUntil:         now.Add(p.cfg.LeaseDuration),
		Limit:              limit,
		UserID:             p.cfg.UserID,
		DefaultMaxAttempts: p.cfg.Retry.MaxAttempts,
		SkipGivenUp:        p.cfg.SkipGivenUp,
		Types:              p.cfg.Types,
		SkipTypes:          skip,
	})
	if err == nil {
		for _, o := range p.cfg.Observers {
			o.ObserveClaim(len(events), time.Since(started))
		}
	}
	if err != nil || len(events) == 0 {
		if probe {
			p.brk.endProbe()
		}
		if err != nil {
			return 0, fmt.Errorf("outbox: claim: %w", err)
		}
		return 0, nil
	}
	if probe {
		p.log.Info("destination unavailable: probing with one event", "event_id", events[0].ID)
	}
	p.log.Debug("batch claimed", "events", len(events))

	stopHeartbeat := p.keepLeases(ctx, events)
	outcomes := p.deliver(ctx, soft, events)
	stopHeartbeat()
	if probe {
		p.brk.endProbe() // a probe cut short by a shutdown must not hold the next one back
	}

	settleStarted := time.Now()
	err = p.settle(ctx, outcomes)
	for _, o := range p.cfg.Observers {
		if so, ok := o.(SettleObserver); ok {
			so.ObserveSettle(len(outcomes), time.Since(settleStarted), err)
		}
	}
	if err != nil {
		return len(events), err
	}
	return len(events), nil
}

// keepLeases renews the batch's leases every third of the lease duration until the
// returned function is called, so that a slow batch is not taken over by another
// processor while this one is alive.
func (p *Processor) keepLeases(ctx context.Context, events []Event) (stop func()) {
	ids := make([]string, len(events))
	for i := range events {
		ids[i] = events[i].ID
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(p.cfg.LeaseDuration / 3)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			until := p.cfg.Clock.Now().Add(p.cfg.LeaseDuration)
			lost, err := p.store.ExtendLease(ctx, p.cfg.Owner, ids, until)
			if err != nil {
				p.log.Warn("lease renewal failed", "err", err, "events", len(ids))
				continue
			}
			if len(lost) > 0 {
				p.log.Warn("leases lost to another processor; their outcomes will not be recorded here", "event_ids", lost)
				for _, o := range p.cfg.Observers {
					if lo, ok := o.(LeaseObserver); ok {
						lo.ObserveLeaseLost(lost)
					}
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// deliver runs the handler over a claimed batch, at most MaxConcurrent at a time, and
// returns one outcome per event. After soft closes, events not yet started are released,
// and so are events whose destination, or target, is held.
func (p *Processor) deliver(ctx context.Context, soft <-chan struct{}, events []Event) []Outcome {
	outcomes := make([]Outcome, len(events))
	if bh, ok := p.handler.(BatchHandler); ok && !stopping(soft) {
		p.deliverBatch(ctx, bh, events, outcomes)
		return outcomes
	}
	sem := make(chan struct{}, p.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	for i := range events {
		e := events[i]
		if e.Unusable != "" {
			outcomes[i] = p.unusable(e)
			continue
		}
		if stopping(soft) || ctx.Err() != nil || p.brk.holding() {
			// Stopping, or the circuit opened while this batch ran: hand the rest back
			// unattempted rather than spend them on a destination at fault.
			outcomes[i] = Outcome{ID: e.ID, Result: Released}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-soft: // nil when not running under Start: never ready
			outcomes[i] = Outcome{ID: e.ID, Result: Released}
			continue
		case <-ctx.Done():
			outcomes[i] = Outcome{ID: e.ID, Result: Released}
			continue
		}
		d, ok := p.admit(e)
		if !ok || p.brk.holding() {
			if d.targetProbe {
				p.holds.endProbe(e.Type)
			}
			<-sem
			outcomes[i] = Outcome{ID: e.ID, Result: Released}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if p.log.Enabled(ctx, slog.LevelDebug) {
				p.log.Debug("processing event", "event_id", e.ID, "type", e.Type, "attempt", e.Attempts)
			}
			started := time.Now()
			err := p.call(ctx, e)
			outcomes[i] = p.outcome(ctx, e, d, err, time.Since(started))
		})
	}
	wg.Wait()
	return outcomes
}

// unusable gives up an event whose row the store could not read in full (see
// Event.Unusable) without calling the handler: no attempt can succeed until the row is
// mended. The destination is not involved, so the breaker and the holds hear nothing.
func (p *Processor) unusable(e Event) Outcome {
	o := Outcome{ID: e.ID, Result: Failed, Error: errorText(Permanent(errors.New("unusable row: " + e.Unusable)))}
	p.log.Error("event given up: its row breaks the SQL contract (docs/any-language.md); mend it, then retry it",
		"event_id", e.ID, "seq", e.Seq, "type", e.Type, "err", o.Error)
	p.observeDelivery(e, o, 0)
	return o
}

// admission is what the processor knows of one delivery as it starts.
type admission struct {
	n           uint64 // its number, for suspicion
	targetProbe bool   // it probes a held target
}

// admit decides whether e may be delivered now, as far as a held target goes, and
// numbers the delivery.
func (p *Processor) admit(e Event) (admission, bool) {
	if !p.brk.enabled() {
		return admission{}, true
	}
	ok, probe := p.holds.admit(e.Type, p.cfg.Clock.Now())
	if !ok {
		return admission{}, false
	}
	if probe {
		p.log.Info("target held: probing with one event", "event_id", e.ID, "type", e.Type)
	}
	return admission{n: p.suspects.Start(), targetProbe: probe}, true
}

func (p *Processor) deliverBatch(ctx context.Context, bh BatchHandler, events []Event, outcomes []Outcome) {
	// Events bound for a held target are handed back before the batch goes out.
	var send []Event
	var idx []int
	var ds []admission
	for i, e := range events {
		if e.Unusable != "" {
			outcomes[i] = p.unusable(e)
			continue
		}
		d, ok := p.admit(e)
		if !ok {
			outcomes[i] = Outcome{ID: e.ID, Result: Released}
			continue
		}
		send, idx, ds = append(send, e), append(idx, i), append(ds, d)
	}
	if len(send) == 0 {
		return
	}
	hctx, cancel := p.handlerContext(ctx)
	defer cancel()
	started := time.Now()
	errs := func() (errs []error) {
		defer func() {
			if r := recover(); r != nil {
				errs = make([]error, len(send))
				for i := range errs {
					errs[i] = fmt.Errorf("handler panicked: %v", r)
				}
				p.log.Error("batch handler panicked", "panic", r, "stack", string(debug.Stack()))
			}
		}()
		return bh.HandleBatch(hctx, send)
	}()
	took := time.Since(started)
	if len(errs) != len(send) {
		err := fmt.Errorf("outbox: batch handler returned %d results for %d events", len(errs), len(send))
		errs = make([]error, len(send))
		for i := range errs {
			errs[i] = err
		}
	}
	for j, e := range send {
		outcomes[idx[j]] = p.outcome(ctx, e, ds[j], errs[j], took)
	}
}

func (p *Processor) handlerContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.cfg.HandlerTimeout > 0 {
		return context.WithTimeout(ctx, p.cfg.HandlerTimeout)
	}
	return context.WithCancel(ctx)
}

// call runs the handler for one event with the handler timeout, turning a panic into
// an error so that one bad event cannot take the processor down.
func (p *Processor) call(ctx context.Context, e Event) (err error) {
	hctx, cancel := p.handlerContext(ctx)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
			p.log.Error("handler panicked", "event_id", e.ID, "type", e.Type, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	err = p.handler.Handle(hctx, e)
	if err != nil && hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = fmt.Errorf("handler timed out after %s: %w", p.cfg.HandlerTimeout, err)
	}
	return err
}

// outcome turns a handler's result into what the store records, and logs it.
func (p *Processor) outcome(ctx context.Context, e Event, d admission, err error, took time.Duration) Outcome {
	o := Outcome{ID: e.ID}
	now := p.cfg.Clock.Now()
	// The event's logger is made only for a line that is written: Logger.With formats
	// its attributes at once, which cost more per event than a no-op delivery.
	log := func() *slog.Logger {
		return p.log.With("event_id", e.ID, "type", e.Type, "attempt", e.Attempts).With(traceAttrs(&e)...)
	}
	de := destinationError(err)
	brk := p.brk.enabled() && ctx.Err() == nil
	switch {
	case err == nil:
		o.Result = Delivered
		p.suspects.Succeeded(d.n, e.ID)
		if p.log.Enabled(ctx, slog.LevelDebug) {
			log().Debug("event delivered", "took", took)
		}
	case ctx.Err() != nil:
		// We were told to stop mid-delivery: the attempt may or may not have landed.
		// Release the event so that it is delivered again, without spending an attempt.
		o.Result = Released
		log().Info("delivery interrupted by shutdown; event released", "err", err)
		if d.targetProbe {
			p.holds.endProbe(e.Type)
		}
	case brk && de != nil && !de.Suspected && de.Target != "":
		// One target of the destination is at fault (a missing topic, say): hold the
		// events bound there, and only those.
		o.Result = Released
		text := errorText(err)
		o.Error = heldError(text)
		if p.holds.fail(now, e.Type, de.Target, de.Reason, text) {
			log().Error("target held: its events wait, unattempted, until a probe gets through",
				"target", de.Target, "reason", de.Reason, "err", text)
			p.observeHold(de.Target, de.Reason, true)
		} else {
			log().Warn("target at fault; attempt not counted", "target", de.Target, "reason", de.Reason, "err", text)
		}
		p.observeUnavailable(e, err)
		p.observeDelivery(e, o, took)
		return o
	case brk && (de != nil && (!de.Suspected || !p.suspects.EventsFault(e.ID)) ||
		de == nil && !IsPermanent(err) && p.cfg.Breaker.IsUnavailable(err)):
		// The destination is at fault (unreachable, credentials rejected, or a suspected
		// failure that nothing has yet proved to be the event's): not the event's fault.
		// Hand it back, due as before, without spending an attempt; the breaker paces
		// what follows.
		o.Result = Released
		reason := ReasonUnreachable
		if de != nil {
			reason = cmp.Or(de.Reason, reason)
		}
		text := errorText(err)
		if de == nil {
			text = errorText(fmt.Errorf("%s: %w", reason, err))
		}
		o.Error = heldError(text)
		log().Warn("destination at fault; attempt not counted", "reason", reason, "err", text)
		p.observeUnavailable(e, err)
		p.recordBreaker(now, true, reason, text)
		p.observeDelivery(e, o, took)
		return o
	default:
		o.Result = Failed
		o.Error = errorText(err)
		maxAttempts := e.EffectiveMaxAttempts(p.cfg.Retry.MaxAttempts)
		switch {
		case IsPermanent(err):
			log().Error("event given up: permanent error", "err", o.Error)
		case e.Attempts >= maxAttempts:
			log().Error("event given up: no attempts left", "err", o.Error, "max_attempts", maxAttempts)
		default:
			o.NextAttemptAt = p.cfg.Retry.NextAttemptAt(now, e.Attempts)
			if after, ok := RetryAfterDelay(err); ok && now.Add(after).After(o.NextAttemptAt) {
				o.NextAttemptAt = now.Add(after)
			}
			log().Warn("delivery failed, will retry", "err", o.Error, "retry_delay", o.NextAttemptAt.Sub(now).Round(time.Millisecond))
			p.retries.add(o.NextAttemptAt)
		}
	}
	if brk && o.Result != Released {
		// The destination answered: its circuit closes, and so does the hold on the
		// target the event's type was held at, if any.
		p.recordBreaker(now, false, "", "")
		if target, reason, ok := p.holds.answered(e.Type); ok {
			log().Info("target answers again: its events resume", "target", target, "reason_was", reason)
			p.observeHold(target, reason, false)
		}
	}
	p.observeDelivery(e, o, took)
	return o
}

// heldError is the error recorded on an event handed back because its destination is
// at fault, so that an operator sees why it waits.
func heldError(text string) string {
	return errorText(errors.New("held, attempt not counted: " + text))
}

// recordBreaker tells the breaker how a delivery went, and logs and reports a change.
func (p *Processor) recordBreaker(now time.Time, unavailable bool, reason, errText string) {
	changed, open, why := p.brk.record(now, unavailable, reason, errText)
	if !changed {
		return
	}
	if open {
		st := p.brk.state()
		p.log.Error("destination at fault: circuit open; deliveries held (attempts are not spent)",
			"reason", why, "err", errText, "faults_in_a_row", st.Unavailable, "next_probe", st.NextProbe)
	} else {
		p.log.Info("destination answers again: circuit closed; deliveries resume", "reason_was", why)
	}
	p.observeHold("", why, open)
}

func (p *Processor) observeDelivery(e Event, o Outcome, took time.Duration) {
	for _, ob := range p.cfg.Observers {
		ob.ObserveDelivery(e, o, took)
	}
}

func (p *Processor) observeUnavailable(e Event, err error) {
	for _, ob := range p.cfg.Observers {
		if bo, ok := ob.(BreakerObserver); ok {
			bo.ObserveUnavailable(e, err)
		}
	}
}

func (p *Processor) observeHold(target, reason string, held bool) {
	for _, ob := range p.cfg.Observers {
		if bo, ok := ob.(BreakerObserver); ok {
			bo.ObserveHold(target, reason, held)
		}
	}
}

// Breaker returns the state of the processor's circuit breaker, with the targets it
// holds on their own.
func (p *Processor) Breaker() BreakerState {
	b := p.brk.state()
	b.Targets = p.holds.state()
	return b
}

// settle records outcomes, retrying while the store fails: a delivered event that is
// not recorded as such would be delivered again once its lease expires.
func (p *Processor) settle(ctx context.Context, outcomes []Outcome) error {
	// Outcomes are recorded even when ctx is cancelled (the deliveries happened);
	// the deadline keeps a dead database from holding Stop forever.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.LeaseDuration)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		err := p.store.Settle(sctx, p.cfg.Owner, p.cfg.Clock.Now(), outcomes)
		if err == nil {
			return nil
		}
		if len(outcomes) > 1 && sctx.Err() == nil {
			// One outcome the store refuses must not lose the others: record them one
			// by one, and go on with those that still fail.
			outcomes = p.settleEach(sctx, outcomes)
			if len(outcomes) == 0 {
				return nil
			}
		}
		p.log.Warn("recording outcomes failed; retrying", "err", err, "events", len(outcomes))
		select {
		case <-sctx.Done():
			return fmt.Errorf("outbox: record outcomes of %d events (they will be delivered again after their leases expire): %w", len(outcomes), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// settleEach records outcomes one at a time and returns those the store refused. A
// failure the store refuses is tried once more with a plain error of its own, so that
// the event is still retried or given up as its handler's result said.
func (p *Processor) settleEach(ctx context.Context, outcomes []Outcome) (refused []Outcome) {
	for _, o := range outcomes {
		err := p.store.Settle(ctx, p.cfg.Owner, p.cfg.Clock.Now(), []Outcome{o})
		if err != nil && o.Result == Failed {
			p.log.Error("the store refused an outcome; recording it with a plain error instead", "event_id", o.ID, "err", err)
			o.Error = errorText(fmt.Errorf("the store refused this attempt's error text (%v)", err))
			err = p.store.Settle(ctx, p.cfg.Owner, p.cfg.Clock.Now(), []Outcome{o})
		}
		if err != nil {
			refused = append(refused, o)
		}
	}
	return refused
}

func stopping(soft <-chan struct{}) bool {
	select {
	case <-soft:
		return true
	default:
		return false
	}
}

// Stats returns the statistics of the events this processor serves, with the outcomes
// of the health rules' window (Config.Health.Window) in Recent.
func (p *Processor) Stats(ctx context.Context) (Stats, error) {
	return p.store.Stats(ctx, p.cfg.Health.StatsQuery(p.cfg.UserID, p.cfg.Clock.Now(), p.cfg.StaleAfter))
}

// StuckEvents returns the events (of this processor's user, if it serves one) held in
// processing under a lease that has expired, oldest first, up to limit (0 means 100):
// their processor is gone, and no running processor has taken them over yet.
func (p *Processor) StuckEvents(ctx context.Context, limit int) ([]Event, error) {
	return p.store.List(ctx, Filter{UserID: p.cfg.UserID, StuckAt: p.cfg.Clock.Now(), Limit: limit})
}

// StaleEvents returns the events (of this processor's user, if it serves one) that
// have been due for longer than StaleAfter, oldest first, up to limit (0 means 100).
func (p *Processor) StaleEvents(ctx context.Context, limit int) ([]Event, error) {
	return p.store.List(ctx, Filter{
		UserID:    p.cfg.UserID,
		DueBefore: p.cfg.Clock.Now().Add(-p.cfg.StaleAfter),
		Limit:     limit,
	})
}

// Health checks the statistics against the configured alert rules, and alerts
// (RuleCircuitOpen) while the circuit breaker is open.
func (p *Processor) Health(ctx context.Context) (Health, error) {
	s, err := p.Stats(ctx)
	if err != nil {
		return Health{}, err
	}
	h := CheckHealth(s, p.cfg.Health)
	if p.brk.enabled() {
		b := p.Breaker()
		h.Breaker = &b
		if b.Open {
			h.Alerts = append(h.Alerts, Alert{Rule: RuleCircuitOpen, Value: 1, Threshold: 0,
				Message: fmt.Sprintf("destination held since %s: %s (%s); deliveries paused, attempts not spent, next probe at %s",
					b.OpenedAt.UTC().Format(time.RFC3339), cmp.Or(b.Reason, ReasonUnreachable), b.Error,
					b.NextProbe.UTC().Format(time.RFC3339))})
		}
		for _, t := range b.Targets {
			h.Alerts = append(h.Alerts, Alert{Rule: RuleTargetHeld, Value: 1, Threshold: 0,
				Message: fmt.Sprintf("target %s held since %s: %s (%s); events of %s wait, attempts not spent, next probe at %s",
					t.Target, t.Since.UTC().Format(time.RFC3339), t.Reason, t.Error, strings.Join(t.Types, ", "),
					t.NextProbe.UTC().Format(time.RFC3339))})
		}
		h.Healthy = len(h.Alerts) == 0
	}
	return h, nil
}
