package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// watchMaxDelay caps the wait between two looks at an event still invisible, and
// watchGiveUp ends the watch of one: its transaction is still open, or was rolled back
// (then it never appears), and the relays' poll finds it if it ever commits.
// An event is looked for at the watcher's interval (Config.WatchInterval) during its
// first watchSteadyLooks intervals (most commits land within a few milliseconds of
// their enqueue), then at doubling intervals.
const (
	watchSteadyLooks = 20
	watchMaxDelay    = time.Second
	watchGiveUp      = 10 * time.Second
)

// watcher wakes relays for events written in a caller's transaction that did not carry
// the NOTIFY itself (see wakeups.notifyInTx). The store cannot see that transaction
// commit, so it looks: a short while after the enqueue, and again at short and then
// doubling intervals; one statement reads which of the watched seqs are visible and NOTIFYs
// their users, outside any caller's transaction. A rolled-back or still-open event is
// invisible, so it wakes nobody.
//
// Its interval is Config.WatchInterval (4 ms by default): a trickle is notified
// inside its transactions and needs no look; busy writers, which are not, leave their
// wake-ups to the looks, and one per interval keeps them a few milliseconds from the
// commits for a statement per look.
type watcher struct {
	pool     poolQuerier
	sql      string
	channel  string
	interval time.Duration // Config.WatchInterval
	log      *slog.Logger
	found    func(users map[string]struct{})

	mu      sync.Mutex
	watched map[int64]*watch
	timer   *time.Timer
	armedAt time.Time // when the timer fires; zero while disarmed
	running bool      // a look is under way; it re-arms the timer itself
	closed  bool
	looks   int // looks taken, for tests
}

type poolQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type watch struct {
	since, due time.Time
	delay      time.Duration
}

func newWatcher(pool poolQuerier, sql, channel string, interval time.Duration, log *slog.Logger, found func(map[string]struct{})) *watcher {
	return &watcher{pool: pool, sql: sql, channel: channel, interval: interval, log: log, found: found, watched: map[int64]*watch{}}
}

// add watches seqs, written in a transaction that has not committed yet.
func (w *watcher) add(now time.Time, seqs ...int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	due := now.Add(w.interval)
	for _, s := range seqs {
		w.watched[s] = &watch{since: now, due: due, delay: w.interval}
	}
	w.armLocked(due)
}

// armLocked makes the timer fire at due, unless it fires earlier already.
func (w *watcher) armLocked(due time.Time) {
	if w.running || (!w.armedAt.IsZero() && !w.armedAt.After(due)) {
		return
	}
	d := time.Until(due)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.look)
	} else {
		w.timer.Reset(d)
	}
	w.armedAt = due
}

// look reads the watched seqs that are due, notifies those now visible, and re-arms
// for the others.
func (w *watcher) look() {
	now := time.Now()
	w.mu.Lock()
	w.armedAt = time.Time{}
	if w.closed && w.watched == nil {
		w.mu.Unlock()
		return
	}
	w.running = true
	// A seq due before the next look is looked for in this one: waiting for its own
	// due time would add up to an interval to its wake-up, and one look reads any
	// number of seqs. If its transaction has not committed yet, the next look finds it.
	var due []int64
	horizon := now.Add(w.interval)
	for s, wt := range w.watched {
		if wt.due.Before(horizon) || w.closed {
			due = append(due, s)
		}
	}
	w.mu.Unlock()

	seen := map[int64]bool{}
	if len(due) > 0 {
		users := map[string]struct{}{}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rows, err := w.query(ctx, due)
		if err == nil {
			var (
				seq  int64
				user string
			)
			_, err = pgx.ForEachRow(rows, []any{&seq, &user}, func() error {
				seen[seq] = true
				users[user] = struct{}{}
				return nil
			})
		}
		cancel()
		if err != nil {
			w.log.Warn("looking for committed events to notify failed; relays will find them at their next poll", "err", err)
			for _, s := range due {
				seen[s] = true // stop watching: the poll is the fallback
			}
		}
		if len(users) > 0 {
			w.found(users)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.running = false
	w.looks++
	var next time.Time
	for _, s := range due {
		wt := w.watched[s]
		if wt == nil {
			continue
		}
		if seen[s] || w.closed || now.Sub(wt.since) >= watchGiveUp {
			delete(w.watched, s)
			continue
		}
		if now.Sub(wt.since) >= watchSteadyLooks*w.interval {
			wt.delay = min(2*wt.delay, watchMaxDelay)
		}
		wt.due = now.Add(wt.delay)
	}
	if w.closed {
		return
	}
	for _, wt := range w.watched {
		if next.IsZero() || wt.due.Before(next) {
			next = wt.due
		}
	}
	if !next.IsZero() {
		// Never sooner than an interval after this look: under a steady stream of
		// enqueues some seq is always about to be due, and chasing each one would
		// run looks back to back instead of one per interval.
		w.armLocked(later(next, now.Add(w.interval)))
	}
}

// query runs the look for seqs. Its plan is made afresh on each run, not cached with
// the connection: a plan cached while the table was nearly empty and never analyzed
// (a new table, and no autovacuum yet, or none at all) reads the whole table, and
// would go on doing so at every look as the table grows. Planning this short
// statement takes about 0.04 ms; a scan of 10,000 rows for it, 1.5–2 ms.
func (w *watcher) query(ctx context.Context, seqs []int64) (pgx.Rows, error) {
	return w.pool.Query(ctx, w.sql, pgx.QueryExecModeExec, pgx.NamedArgs{"seqs": seqs, "channel": w.channel})
}

// close takes a last look at everything still watched and stops.
func (w *watcher) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.armedAt = time.Time{}
	pending := len(w.watched) > 0
	w.mu.Unlock()
	// A look under way when the timer was stopped still finishes: wait for it.
	for {
		w.mu.Lock()
		running := w.running
		w.mu.Unlock()
		if !running {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if pending {
		w.look()
	}
}
