package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// firstReconnectDelay is the wait before the first attempt to re-establish a lost
// LISTEN connection; it doubles up to Config.ReconnectMaxDelay.
const firstReconnectDelay = 100 * time.Millisecond

// listener holds the store's one LISTEN connection and fans its notifications out to
// subscribers. It starts with the first subscription.
type listener struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// connected is true while LISTEN is in effect; while it is not, the store wakes its
	// own subscribers after its own commits (see announce).
	connected atomic.Bool
	pid       atomic.Uint32 // backend of the LISTEN connection, for tests

	mu      sync.Mutex
	subs    map[*subscription]struct{}
	started bool
	closed  bool
	pending map[string]struct{} // user IDs notified since the last fan-out
	all     bool                // wake every subscriber at the next fan-out
	kick    chan struct{}       // a fan-out is due

	// The NOTIFYs of the store's own commits (Enqueue, Transact), sent after them.
	outStarted bool
	outPending map[string]struct{}
	outKick    chan struct{}
}

type subscription struct {
	userID string
	wake   chan struct{}
}

func newListener(s *Store) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{
		s: s, ctx: ctx, cancel: cancel,
		subs:       map[*subscription]struct{}{},
		pending:    map[string]struct{}{},
		kick:       make(chan struct{}, 1),
		outPending: map[string]struct{}{},
		outKick:    make(chan struct{}, 1),
	}
}

// Subscribe implements outbox.Notifier: the channel receives a value (at most one
// waits) when events for userID, or for anyone when userID is empty, may have been
// committed: by any process, through NOTIFY, or by this store. The first subscription
// starts the store's LISTEN connection (unless Config.DisableListen).
func (s *Store) Subscribe(userID string) (<-chan struct{}, func()) {
	l := s.listener
	sub := &subscription{userID: userID, wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.subs[sub] = struct{}{}
	start := !l.started && !l.closed && !s.cfg.DisableListen
	l.started = l.started || start
	l.mu.Unlock()
	if start {
		l.wg.Go(l.run)
		l.wg.Go(l.fanOut)
	}
	return sub.wake, func() {
		l.mu.Lock()
		delete(l.subs, sub)
		l.mu.Unlock()
	}
}

// committed tells relays that the store itself committed events for users. Its NOTIFY
// goes out after the commit, from a connection of the pool, gathered with those of other
// commits at most once per NotifyDebounce: a NOTIFY sent inside the commit would hold
// PostgreSQL's cluster-wide notification lock through the commit and its WAL flush,
// making concurrent enqueuing transactions commit one at a time.
func (s *Store) committed(users map[string]struct{}) {
	s.announce(users)
	if s.cfg.DisableNotify || len(users) == 0 {
		return
	}
	l := s.listener
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.sendNotify(context.Background(), users)
		return
	}
	for u := range users {
		l.outPending[u] = struct{}{}
	}
	start := !l.outStarted
	l.outStarted = true
	l.mu.Unlock()
	if start {
		l.wg.Go(l.notifyLoop)
	}
	select {
	case l.outKick <- struct{}{}:
	default:
	}
}

// notifyLoop sends the NOTIFYs that committed gathers: at once after a quiet spell,
// then at most once per NotifyDebounce. When the store closes it sends what is left.
func (l *listener) notifyLoop() {
	var timer *time.Timer
	for {
		select {
		case <-l.ctx.Done():
			l.flushNotify(context.Background())
			return
		case <-l.outKick:
		}
		l.flushNotify(l.ctx)
		if d := l.s.cfg.NotifyDebounce; d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-l.ctx.Done():
				timer.Stop()
				l.flushNotify(context.Background())
				return
			case <-timer.C:
			}
		}
	}
}

func (l *listener) flushNotify(ctx context.Context) {
	l.mu.Lock()
	users := l.outPending
	l.outPending = map[string]struct{}{}
	l.mu.Unlock()
	if len(users) > 0 {
		l.s.sendNotify(ctx, users)
	}
}

// sendNotify sends one notification per user. When it fails, relays find the events at
// their next poll; nothing is lost.
func (s *Store) sendNotify(ctx context.Context, users map[string]struct{}) {
	list := make([]string, 0, len(users))
	for u := range users {
		list = append(list, u)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.q.notifyUsers, pgx.NamedArgs{"channel": s.cfg.Channel, "users": list}); err != nil {
		s.log.Warn("NOTIFY after commit failed; relays will find the events at their next poll", "err", err)
	}
}

// announce wakes this process's subscribers after the store committed events for
// users, unless the notification will reach them through LISTEN anyway.
func (s *Store) announce(users map[string]struct{}) {
	if len(users) > 0 && (s.cfg.DisableNotify || !s.listener.connected.Load()) {
		s.listener.wake(users, false)
	}
}

func (l *listener) wake(users map[string]struct{}, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for sub := range l.subs {
		if _, ok := users[sub.userID]; ok || all || sub.userID == "" {
			select {
			case sub.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
}

// push records a notification (or, with all, a reason to wake everyone) for the next
// fan-out.
func (l *listener) push(userID string, all bool) {
	l.mu.Lock()
	if all {
		l.all = true
	} else {
		l.pending[userID] = struct{}{}
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// fanOut wakes subscribers for what push recorded: at once after a quiet spell, then
// at most once per NotifyDebounce while notifications keep coming, so that a burst of
// commits costs one wake-up per processor, not one per commit.
func (l *listener) fanOut() {
	var timer *time.Timer
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
		}
		l.mu.Lock()
		users, all := l.pending, l.all
		l.pending, l.all = map[string]struct{}{}, false
		l.mu.Unlock()
		l.wake(users, all)

		if d := l.s.cfg.NotifyDebounce; d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-l.ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
	}
}

// run keeps a LISTEN connection up until the store is closed, reconnecting with
// backoff when it drops. Processors poll meanwhile, and every subscriber is woken
// once the connection is back, for whatever was committed while it was down.
func (l *listener) run() {
	delay := firstReconnectDelay
	var timer *time.Timer
	for {
		listened, err := l.session()
		if l.ctx.Err() != nil {
			return
		}
		if listened {
			delay = firstReconnectDelay
			l.s.log.Warn("LISTEN connection lost; processors poll until it is back", "err", err)
		} else {
			l.s.log.Warn("LISTEN connection failed; retrying", "err", err, "retry_in", delay)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if !listened {
			delay = min(2*delay, l.s.cfg.ReconnectMaxDelay)
		}
	}
}

// session connects, listens, and relays notifications until the connection fails or
// the store closes. It reports whether LISTEN took effect.
func (l *listener) session() (bool, error) {
	// A connection of its own, outside the pool: it is held for as long as the store
	// lives and must not count against the pool's MaxConns.
	conn, err := pgx.ConnectConfig(l.ctx, l.s.pool.Config().ConnConfig)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(l.ctx, "LISTEN "+newNames(l.s.cfg).Listen); err != nil {
		return false, err
	}
	l.pid.Store(conn.PgConn().PID())
	l.connected.Store(true)
	defer l.connected.Store(false)
	l.s.log.Debug("listening for notifications", "channel", l.s.cfg.Channel)
	l.push("", true) // catch up with commits made while nobody listened
	for {
		n, err := conn.WaitForNotification(l.ctx)
		if err != nil {
			return true, err
		}
		l.push(n.Payload, false)
	}
}
