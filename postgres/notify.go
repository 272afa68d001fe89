package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox/internal/debounce"
)

// notifier is the outbound half of wake-ups: it sends the NOTIFYs of the store's own
// commits (Enqueue, and Transact's but for the first after a quiet spell, whose NOTIFY
// goes inside the transaction) after them, from a connection of the pool, gathered at most
// once per NotifyDebounce. A NOTIFY sent inside each commit would hold PostgreSQL's
// cluster-wide notification lock through the commit and its WAL flush, making
// concurrent enqueuing transactions commit one at a time.
type notifier struct {
	pool    *pgxpool.Pool
	sql     string
	channel string
	log     *slog.Logger
	batch   *debounce.Batcher

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	started bool
	closed  bool
}

func newNotifier(pool *pgxpool.Pool, notifySQL string, cfg Config, log *slog.Logger) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{pool: pool, sql: notifySQL, channel: cfg.Channel, log: log, ctx: ctx, cancel: cancel}
	n.batch = debounce.New(cfg.NotifyDebounce, func(users map[string]struct{}, _ bool) { n.send(users) })
	return n
}

// add queues a notification for each user; the first after a quiet spell goes at once.
func (n *notifier) add(users map[string]struct{}) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.send(users)
		return
	}
	start := !n.started
	n.started = true
	n.mu.Unlock()
	if start {
		n.wg.Go(func() { n.batch.Run(n.ctx); n.batch.Flush() })
	}
	for u := range users {
		n.batch.Add(u)
	}
}

// close sends what is still gathered and stops.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
}

// send sends one notification per user. When it fails, relays find the events at
// their next poll; nothing is lost.
func (n *notifier) send(users map[string]struct{}) {
	list := make([]string, 0, len(users))
	for u := range users {
		list = append(list, u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.pool.Exec(ctx, n.sql, pgx.NamedArgs{"channel": n.channel, "users": list}); err != nil {
		n.log.Warn("NOTIFY after commit failed; relays will find the events at their next poll", "err", err)
	}
}

// committed tells relays that the store itself committed events for users.
func (s *Store) committed(users map[string]struct{}) {
	s.announce(users)
	s.queueNotify(users)
}

// queueNotify has the notifier send NOTIFYs for users after a commit, gathered.
func (s *Store) queueNotify(users map[string]struct{}) {
	if s.cfg.DisableNotify || len(users) == 0 {
		return
	}
	s.notifier.add(users)
}

// announce wakes this process's subscribers after the store committed events for
// users, unless the notification will reach them through LISTEN anyway.
func (s *Store) announce(users map[string]struct{}) {
	if len(users) > 0 && (s.cfg.DisableNotify || !s.listener.connected.Load()) {
		s.listener.subs.Wake(users, false)
	}
}
