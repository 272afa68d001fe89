package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrTimeout: the store did not answer a call within its deadline, and the call was
// abandoned. Whether it took effect is unknown: a claim it made is taken over when
// its lease expires, outcomes it recorded are recorded again.
var ErrTimeout = errors.New("outbox: store did not answer in time")

// MinLeaseDuration is the shortest Config.LeaseDuration a processor accepts: the
// lease is renewed every third of it, and each store call must fit in that third.
const MinLeaseDuration = 10 * time.Millisecond

// BoundStore returns s with a deadline on every call: a call that has not returned
// after timeout is abandoned (its context is cancelled) and returns an error matching
// both ErrTimeout and context.DeadlineExceeded, so that a hung connection (a silent
// network, a failed-over server) costs one timeout instead of blocking its caller
// for as long as the silence lasts. A call still waiting after half the timeout is
// logged with what it waits for. A processor bounds its own calls this way (see
// Config.RoundTripTimeout); operator tools wrap their store with it. A non-positive
// timeout returns s unchanged. The result is a Notifier when s is one.
func BoundStore(s Store, timeout time.Duration, logger *slog.Logger) Store {
	if timeout <= 0 || s == nil {
		return s
	}
	if b, ok := s.(*boundStore); ok {
		s = b.Store
	}
	if logger == nil {
		logger = slog.Default()
	}
	b := &boundStore{Store: s, timeout: timeout, log: logger}
	if n, ok := s.(Notifier); ok {
		return &boundNotifier{b, n}
	}
	return b
}

type boundStore struct {
	Store
	timeout time.Duration
	log     *slog.Logger
}

// Unwrap returns the store under the deadlines.
func (b *boundStore) Unwrap() Store { return b.Store }

type boundNotifier struct {
	*boundStore
	n Notifier
}

func (b *boundNotifier) Subscribe(userID string) (<-chan struct{}, func()) {
	return b.n.Subscribe(userID)
}

// bounded runs fn under the store's deadline.
func bounded[T any](b *boundStore, ctx context.Context, call string, fn func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	started := time.Now()
	slow := time.AfterFunc(b.timeout/2, func() {
		b.log.Warn("waiting for the store to answer", "call", call,
			"waited", time.Since(started).Round(time.Millisecond), "abandon_after", b.timeout)
	})
	v, err := fn(cctx)
	slow.Stop()
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		b.log.Warn("store call abandoned at its deadline", "call", call, "timeout", b.timeout, "err", err)
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
		}
		err = fmt.Errorf("%w: %s abandoned after %s: %w", ErrTimeout, call, b.timeout, err)
	}
	return v, err
}

func (b *boundStore) Enqueue(ctx context.Context, now time.Time, events ...*Event) error {
	_, err := bounded(b, ctx, "enqueue", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, b.Store.Enqueue(ctx, now, events...)
	})
	return err
}

func (b *boundStore) Claim(ctx context.Context, p ClaimParams) ([]Event, error) {
	return bounded(b, ctx, "claim", func(ctx context.Context) ([]Event, error) { return b.Store.Claim(ctx, p) })
}

func (b *boundStore) ExtendLease(ctx context.Context, owner string, ids []string, until time.Time) ([]string, error) {
	return bounded(b, ctx, "extend lease", func(ctx context.Context) ([]string, error) {
		return b.Store.ExtendLease(ctx, owner, ids, until)
	})
}

func (b *boundStore) Settle(ctx context.Context, owner string, now time.Time, outcomes []Outcome) error {
	_, err := bounded(b, ctx, "settle", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, b.Store.Settle(ctx, owner, now, outcomes)
	})
	return err
}

func (b *boundStore) Get(ctx context.Context, id string) (Event, error) {
	return bounded(b, ctx, "get", func(ctx context.Context) (Event, error) { return b.Store.Get(ctx, id) })
}

func (b *boundStore) List(ctx context.Context, f Filter) ([]Event, error) {
	return bounded(b, ctx, "list", func(ctx context.Context) ([]Event, error) { return b.Store.List(ctx, f) })
}

func (b *boundStore) Update(ctx context.Context, now time.Time, e *Event) error {
	_, err := bounded(b, ctx, "update", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, b.Store.Update(ctx, now, e)
	})
	return err
}

func (b *boundStore) Retry(ctx context.Context, now time.Time, f Filter) (int, error) {
	return bounded(b, ctx, "retry", func(ctx context.Context) (int, error) { return b.Store.Retry(ctx, now, f) })
}

func (b *boundStore) Delete(ctx context.Context, ids ...string) (int, error) {
	return bounded(b, ctx, "delete", func(ctx context.Context) (int, error) { return b.Store.Delete(ctx, ids...) })
}

func (b *boundStore) DeleteCompleted(ctx context.Context, before time.Time, limit int) (int, error) {
	return bounded(b, ctx, "delete completed", func(ctx context.Context) (int, error) {
		return b.Store.DeleteCompleted(ctx, before, limit)
	})
}

func (b *boundStore) Stats(ctx context.Context, q StatsQuery) (Stats, error) {
	return bounded(b, ctx, "stats", func(ctx context.Context) (Stats, error) { return b.Store.Stats(ctx, q) })
}

// StoreAs finds the first store in s's chain of wrapped stores (a store that wraps
// another has an Unwrap() Store method, as BoundStore's does) that implements T, the
// way errors.As walks an error's chain, so that the optional interfaces of a store
// (TypePauser, Timeline, KeyInspector) stay within reach through a wrapper.
func StoreAs[T any](s Store) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	var zero T
	return zero, false
}
