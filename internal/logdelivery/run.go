package logdelivery

import (
	"context"
	"errors"
	"sync"
)

// ErrRunning is Runner.Start's error when a Run of the relay is already going.
var ErrRunning = errors.New("the relay is already running")

// Runner lets a relay's Run be stopped gracefully. Run calls Start, steps until its
// context ends or Stopping is closed (checking it before its first step, between steps
// and in its waits, never within a step), and calls the finish func Start returned.
// Stop closes Stopping, waits for Run to return, and cancels the step in flight only
// when its own context ends first. The zero value is ready.
type Runner struct {
	mu  sync.Mutex
	run *run
	// stopped: a Stop came while no Run was going. Run is commonly begun on a
	// goroutine of its own and stopped on a signal, which can come before that
	// goroutine has begun Run: the next Run then returns before its first step, rather
	// than go on with nothing left to stop it.
	stopped bool
}

type run struct {
	stopping, done chan struct{}
	stopOnce       sync.Once
	cancel         context.CancelFunc
}

// Start begins a Run under ctx. It returns the context Run's steps run under (ended
// with ctx, or by a Stop that gave up waiting), the channel Stop closes, and the func
// Run must call when it returns. It fails with ErrRunning while another Run is going.
func (r *Runner) Start(ctx context.Context) (runCtx context.Context, stopping <-chan struct{}, finish func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.run != nil {
		return nil, nil, nil, ErrRunning
	}
	runCtx, cancel := context.WithCancel(ctx)
	ru := &run{stopping: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	if r.stopped {
		r.stopped = false
		ru.stopOnce.Do(func() { close(ru.stopping) })
	}
	r.run = ru
	return runCtx, ru.stopping, func() {
		cancel()
		r.mu.Lock()
		r.run = nil
		r.mu.Unlock()
		close(ru.done)
	}, nil
}

// Stop asks the Run going, if any, to return once its step in flight has finished
// (delivered and committed), and waits for it. If ctx ends first, it cancels the step
// (whose batch is then delivered again, as after a crash), waits for Run to return,
// and returns ctx's error. Without a Run going it returns nil at once, and the next
// Run returns before its first step.
func (r *Runner) Stop(ctx context.Context) error {
	r.mu.Lock()
	ru := r.run
	if ru == nil {
		r.stopped = true
	}
	r.mu.Unlock()
	if ru == nil {
		return nil
	}
	ru.stopOnce.Do(func() { close(ru.stopping) })
	select {
	case <-ru.done:
		return nil
	case <-ctx.Done():
		ru.cancel()
		<-ru.done
		return ctx.Err()
	}
}
