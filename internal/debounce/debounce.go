// Package debounce gathers keys from many callers and hands them on in batches: at once
// after a quiet spell, then at most once per interval while keys keep coming. The
// stores use it so that a burst of commits costs one notification, or one wake-up per
// processor, instead of one per commit.
package debounce

import (
	"context"
	"sync"
	"time"
)

// Batcher collects keys for its flush function. Add and AddAll never block; Run
// delivers what they gathered.
type Batcher struct {
	interval time.Duration
	flush    func(keys map[string]struct{}, all bool)
	kick     chan struct{}

	mu      sync.Mutex
	pending map[string]struct{}
	all     bool
}

// New returns a Batcher that calls flush with the keys gathered since its last call,
// and all set when AddAll was called meanwhile. An interval of zero or less flushes
// on every kick, without waiting.
func New(interval time.Duration, flush func(keys map[string]struct{}, all bool)) *Batcher {
	return &Batcher{interval: interval, flush: flush, kick: make(chan struct{}, 1), pending: map[string]struct{}{}}
}

// Add records keys for the next flush.
func (b *Batcher) Add(keys ...string) {
	b.mu.Lock()
	for _, k := range keys {
		b.pending[k] = struct{}{}
	}
	b.mu.Unlock()
	b.poke()
}

// AddAll records that the next flush concerns everything, whatever its keys.
func (b *Batcher) AddAll() {
	b.mu.Lock()
	b.all = true
	b.mu.Unlock()
	b.poke()
}

func (b *Batcher) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run flushes until ctx ends. It does not flush what is left when ctx ends: call
// Flush after Run returns for that.
func (b *Batcher) Run(ctx context.Context) {
	var timer *time.Timer
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		b.Flush()
		if b.interval <= 0 {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(b.interval)
		} else {
			timer.Reset(b.interval)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// Flush calls flush now with what has been gathered, if anything has.
func (b *Batcher) Flush() {
	b.mu.Lock()
	keys, all := b.pending, b.all
	b.pending, b.all = map[string]struct{}{}, false
	b.mu.Unlock()
	if len(keys) > 0 || all {
		b.flush(keys, all)
	}
}

// Pending returns the keys gathered for the next flush, for tests and diagnostics.
func (b *Batcher) Pending() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	keys := make([]string, 0, len(b.pending))
	for k := range b.pending {
		keys = append(keys, k)
	}
	return keys
}
