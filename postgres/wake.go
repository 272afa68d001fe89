package postgres

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/debounce"
)

// wakeups owns a Store's wake-ups, which tell idle relays that events were committed,
// so that they claim them at once instead of at their next poll. Both directions:
//
//   - Outbound, an enqueue in a transaction (EnqueueTx, EnqueueSQLTx) after a quiet spell
//     of one Config.WatchInterval sends its NOTIFY inside the transaction (notifyInTx).
//     The others are notified by the store: in a transaction of Transact, and after
//     Enqueue, by a NOTIFY after the commit, gathered per Config.NotifyDebounce
//     (notifier); in a caller's own transaction, by the watcher, which looks for the
//     events' seqs once per Config.WatchInterval and NOTIFYs those it finds committed
//     (watch.go).
//   - Inbound, the store's one LISTEN connection fans the notifications it receives out
//     to this process's subscribers, at most once per Config.NotifyDebounce (listen.go),
//     and the store wakes them itself after its own commits while it is not listening.
type wakeups struct {
	disableNotify bool          // Config.DisableNotify
	disableListen bool          // Config.DisableListen
	quietSpell    time.Duration // Config.WatchInterval: see notifyInTx

	// lastEnqueue is when (Unix ns) EnqueueTx or EnqueueSQLTx last ran; see notifyInTx.
	lastEnqueue atomic.Int64

	notifier *notifier // NOTIFY after the store's own commits, gathered per NotifyDebounce
	watcher  *watcher  // NOTIFY for callers' transactions that did not carry one, per WatchInterval
	listener *listener // LISTEN, fanned out to this process's subscribers per NotifyDebounce
}

func newWakeups(pool *pgxpool.Pool, q queries, cfg Config, log *slog.Logger) *wakeups {
	w := &wakeups{
		disableNotify: cfg.DisableNotify,
		disableListen: cfg.DisableListen,
		quietSpell:    cfg.WatchInterval,
	}
	w.listener = newListener(pool.Config().ConnConfig, cfg, log)
	w.notifier = newNotifier(pool, q.notifyUsers, cfg, log)
	w.watcher = newWatcher(pool, q.notifyVisible, cfg.Channel, cfg.WatchInterval, log, w.announce)
	return w
}

// close takes the watcher's last look, sends the NOTIFYs still gathered, and stops the
// LISTEN connection.
func (w *wakeups) close() {
	w.watcher.close()
	w.notifier.close()
	w.listener.close()
}

// notifyInTx reports whether an enqueue in a transaction sends its NOTIFY inside that
// transaction: only one after a quiet spell does, when the store ran no other enqueue
// for a watch interval. PostgreSQL holds a cluster-wide lock from a notifying
// transaction's commit until its WAL flush is done, so notifying commits go one at a
// time, and writers queue for it when they notify often. With a quiet spell of T,
// writers enqueueing at random send at most 1/(e·T) such NOTIFYs a second, whatever
// their rate: with T = 1 ms up to 370, and writers were seen waiting on the lock
// (bench/results/quiet-spell.txt); with the watch interval, 4 ms by default, up to 92.
// A trickle still has its wake-up delivered with the commit; an enqueue within a watch
// interval of another leaves it to the watcher (or, in Transact, to the notifier), which
// takes the lock once for all the commits of an interval, without a flush. Within the
// spell, a look is coming anyway.
func (w *wakeups) notifyInTx(now time.Time) bool {
	if w.disableNotify {
		return false
	}
	return now.UnixNano()-w.lastEnqueue.Swap(now.UnixNano()) >= int64(w.quietSpell)
}

// watchUnlessNotified hands the events of an enqueue in a caller's transaction that sent
// no NOTIFY to the watcher.
func (w *wakeups) watchUnlessNotified(now time.Time, notified bool, events []*outbox.Event) {
	if notified || w.disableNotify || len(events) == 0 {
		return
	}
	seqs := make([]int64, len(events))
	for i, e := range events {
		seqs[i] = e.Seq
	}
	w.watcher.add(now, seqs...)
}

// committed tells relays that the store itself committed events for users, none of
// whose NOTIFYs went inside the transaction.
func (w *wakeups) committed(users map[string]struct{}) {
	w.transacted(users, users)
}

// transacted tells relays that the store committed events for users, of whom those in
// unnotified had no NOTIFY inside the transaction: the notifier sends theirs.
func (w *wakeups) transacted(users, unnotified map[string]struct{}) {
	w.announce(users)
	if w.disableNotify || len(unnotified) == 0 {
		return
	}
	w.notifier.add(unnotified)
}

// announce wakes this process's subscribers after the store committed events for
// users, unless the notification will reach them through LISTEN anyway.
func (w *wakeups) announce(users map[string]struct{}) {
	if len(users) > 0 && (w.disableNotify || !w.listener.connected.Load()) {
		w.listener.subs.Wake(users, false)
	}
}

// Subscribe implements outbox.Notifier: the channel receives a value (at most one
// waits) when events for userID, or for anyone when userID is empty, may have been
// committed: by any process, through NOTIFY, or by this store. The first subscription
// starts the store's LISTEN connection (unless Config.DisableListen).
func (s *Store) Subscribe(userID string) (<-chan struct{}, func()) {
	return s.wake.listener.subscribe(userID, !s.wake.disableListen)
}

// notifier sends the NOTIFYs of the store's own commits (Enqueue, and Transact's but
// for the first after a quiet spell, whose NOTIFY goes inside the transaction) after
// them, from a connection of the pool, gathered at most once per NotifyDebounce. A
// NOTIFY sent inside each commit would hold PostgreSQL's cluster-wide notification
// lock through the commit and its WAL flush, making concurrent enqueuing transactions
// commit one at a time.
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
