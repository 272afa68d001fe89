package postgres

// Wake-ups of the log layout's relay (issue 24, docs/log-layout.md). AppendTx sends no
// NOTIFY inside the caller's transaction, so an idle LogRelay learns of a commit in
// one of these ways, and each is only a hint: the step that follows reads the log,
// and its read decides what there is to deliver.
//
//   - In-process: Log.Transact, or Log.Committed after a transaction of the caller's
//     own, wakes the relays of this process that read the log, through a hub (as
//     Store.Transact wakes the Store's processors). An append of this process that
//     does neither makes the relays' head polls faster for a moment (the append
//     hint, log_appendhint.go).
//   - Across processes: the relay's head poll (logHead), every HeadPollInterval while
//     the relay is idle: a statement of one round trip outside any transaction, and,
//     when it shows that a transaction finished, a look in the log (one round trip, in
//     a short read-only transaction of its own).

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox/internal/hub"
	"github.com/fitiq/outbox/internal/logdelivery"
)

// logHeadSnapshot is the head poll's usual statement. pg_current_snapshot() lists
// xmax (one past the latest transaction ID to have finished) and the IDs below it
// still running. A transaction that finishes either raises xmax (when its ID is at or
// above it) or leaves that list (when below): so two equal snapshots mean that no
// transaction holding an ID finished between them, and none can have committed events
// to the log. A new transaction taking an ID changes neither. The statement reads no
// table and takes no lock; its cost is that of a statement's round trip.
const logHeadSnapshot = `SELECT pg_current_snapshot()::text`

// logHeadNews tells, once the snapshot has changed, which of the shards $2 hold events
// visible now and not in the snapshot given for the shard ($1, a text snapshot per
// shard): for each shard, the cursor's two ranges of the primary key (readLog's) within
// the shard, probed for one row, so that index probes answer it. The snapshot is the
// cluster's, so commits to other tables or databases change it too; this keeps them
// from costing a step, and tells the relay which shards to step. It returns the
// snapshot it judged by. The head poll gives every shard the same snapshot; a relay
// woken in its process gives each shard its cursor's position (shardsWithNews).
//
// As in readLog, the probes are ordered, with their limit in the CTE where the planner
// cannot see it, and a running transaction's xid is a range of one (xid >= and <=, not
// =): so the planner merges index scans of every partition, rather than plan a
// sequential scan of a partition that is empty when it plans, which a cached generic
// plan would keep once the partition fills.
const logHeadNews = `
WITH h AS MATERIALIZED (
    SELECT pg_current_snapshot() AS now, 1::bigint AS lim
)
SELECT h.now::text, ARRAY(
    SELECT p.n FROM unnest($1::text[], $2::smallint[]) AS p(prev, n)
    WHERE EXISTS (
        (SELECT 1 FROM {{log}}
         WHERE shard = p.n AND xid >= pg_snapshot_xmax(p.prev::pg_snapshot) AND xid < pg_snapshot_xmax(h.now)
             AND pg_visible_in_snapshot(xid, h.now)
         ORDER BY xid, seq LIMIT h.lim)
        UNION ALL
        (SELECT 1 FROM unnest(ARRAY(SELECT pg_snapshot_xip(p.prev::pg_snapshot))) AS x(xid)
         CROSS JOIN LATERAL (
             SELECT xid, seq FROM {{log}}
             WHERE shard = p.n AND xid >= x.xid AND xid <= x.xid AND pg_visible_in_snapshot(xid, h.now)
             ORDER BY xid, seq LIMIT h.lim) r))
    )
FROM h`

// logHeadQuerier runs the head poll's statements: the log's pool.
type logHeadQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// The look in the log (logHeadNews) runs in a read-only transaction of its own that
// sets plan_cache_mode to force_generic_plan, all in the look's one round trip. The
// server otherwise chooses for each prepared statement between a plan made once (the
// generic plan) and one made for each call's values, by comparing their estimated
// costs; the look's generic plan, re-made after a TRUNCATE of a partition (Retain), can
// be estimated above the calls' plans of before, and from then on the server plans the
// look at every call: over the ring's 16 partitions a look then took 0.8 ms on one
// connection, most of it the server planning, where on its generic plan it takes
// 0.14-0.17 ms (bench/results/log-relay-idle-busy.txt). The generic plan is the right one
// whatever the values: they choose no partition and change no row estimate.
// TestLogHeadLookKeepsItsGenericPlan shows the switch without this. The relay's step
// sets the same in its transaction, for its read over the ring.
const (
	lookBegin       = `BEGIN READ ONLY`
	genericPlanOnly = `SET LOCAL plan_cache_mode = force_generic_plan`
	lookEnd         = `COMMIT`
)

// logHead is an idle relay's head poll: look reports whether events may have been
// committed to the log, in any shard, since a snapshot base that the relay's last reads
// were all taken after. It never misses one: it answers "nothing" only when
// logHeadNews found nothing since base at a snapshot (quiet) and no transaction has
// finished since (the snapshot is still quiet's). Not safe for concurrent use: Run
// owns it.
type logHead struct {
	q      logHeadQuerier
	news   string  // logHeadNews, rendered for the log
	shards []int16 // every shard of the log: a relay takes any of them

	quiet     string // the last snapshot at which news found nothing since quietBase; "" none
	quietBase string
	expected  int64 // the append time for which a look last skipped news
	checks    int   // how many times news ran, for tests
}

func newLogHead(q logHeadQuerier, l *Log) *logHead {
	shards := make([]int16, l.cfg.Shards)
	for i := range shards {
		shards[i] = int16(i)
	}
	return &logHead{q: q, news: l.n.render(logHeadNews), shards: shards}
}

// look asks the database which shards hold events that were not visible in the
// snapshot base (none: nothing new), and returns them with the snapshot it judged by:
// every event visible in that snapshot and not in base is in those shards. It costs
// one round trip when no transaction has finished since the last look that found
// nothing since base, two when one has. Given the time of an append of this process
// that may just have committed (appendedAt, 0 for none), a log of one shard skips the
// second, once for that append: the relay's step reads the log anyway, and costs
// about what the look would when it finds nothing (once: on a busy server other
// commits change the snapshot too, and each skip that finds nothing costs a step).
func (h *logHead) look(ctx context.Context, base string, appendedAt int64) (shards []int16, at string, err error) {
	var now string
	if err := h.q.QueryRow(ctx, logHeadSnapshot).Scan(&now); err != nil {
		return nil, "", fmt.Errorf("outbox/postgres: log relay: poll the log's head: %w", err)
	}
	prev := base
	if h.quiet != "" && base == h.quietBase {
		if now == h.quiet {
			return nil, now, nil
		}
		// Nothing came between base and quiet: look only past quiet, whose list of
		// running transactions is the shorter.
		prev = h.quiet
	}
	if appendedAt != 0 && appendedAt != h.expected && len(h.shards) == 1 {
		h.expected, h.quiet = appendedAt, ""
		return h.shards, now, nil
	}
	h.checks++
	prevs := make([]string, len(h.shards))
	for i := range prevs {
		prevs[i] = prev
	}
	if now, shards, err = lookInLog(ctx, h.q, h.news, prevs, h.shards); err != nil {
		h.quiet = ""
		return nil, "", fmt.Errorf("outbox/postgres: log relay: look for events past the cursor: %w", err)
	}
	if len(shards) > 0 {
		h.quiet = ""
	} else {
		h.quiet, h.quietBase = now, base
	}
	return shards, now, nil
}

// lookInLog runs news (logHeadNews rendered) past the snapshots prevs of shards, on
// its generic plan (genericPlanOnly), in one round trip, and returns the snapshot it
// judged by and the shards with news.
func lookInLog(ctx context.Context, q logHeadQuerier, news string, prevs []string, shards []int16) (now string, with []int16, err error) {
	b := &pgx.Batch{}
	b.Queue(lookBegin)
	b.Queue(genericPlanOnly)
	b.Queue(news, prevs, shards)
	b.Queue(lookEnd)
	br := q.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}()
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return "", nil, err
		}
	}
	if err := br.QueryRow().Scan(&now, &with); err != nil {
		return "", nil, err
	}
	if _, err := br.Exec(); err != nil {
		return "", nil, err
	}
	return now, with, nil
}

// awaitNews is Run's wait after a round that found nothing to read: it returns when a
// local appender says it committed (wake), when the head poll finds events that were
// not visible in base, when PollInterval has passed (the next round reads regardless:
// the poll is a hint), or with ctx's error. base is a snapshot that every shard's last
// read was taken after ("" when there is none: then only wake-ups and PollInterval
// end the wait). When the head poll ended it, it returns the shards that hold the
// events and the snapshot it found them at, which serves the next round as its base;
// otherwise none and "". It polls every every (see headPollEvery), or faster while an
// append of this process since read (when the last round that delivered began) may be
// about to commit (appended says one happened; see Log.appendPollEvery). A failed poll
// is logged and ends the polling of this wait.
func (r *LogRelay) awaitNews(ctx context.Context, head *logHead, stopping, wake, appended <-chan struct{}, base string, every time.Duration, read time.Time) ([]int16, string, error) {
	full := time.NewTimer(r.cfg.PollInterval)
	defer full.Stop()
	polling := every > 0 && every < r.cfg.PollInterval && base != ""
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	polled := time.Now() // the next poll is due an interval after the last one began
	var appendedAt int64 // when the append the poll is faster for was made; 0 none
	arm := func() {
		if polling {
			d := r.log.appendPollEvery(every, read)
			appendedAt = 0
			if d < every {
				appendedAt = r.log.appendedAt.Load()
			}
			poll.Reset(d - time.Since(polled))
		} else {
			poll.Stop()
		}
	}
	arm()
	for {
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-stopping:
			return nil, "", nil // Run sees it
		case <-full.C:
			return nil, "", nil
		case <-wake:
			return nil, "", nil
		case <-appended:
			arm()
		case <-poll.C:
			polled = time.Now()
			shards, at, err := head.look(ctx, base, appendedAt)
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
			if err != nil {
				r.logger.Warn("head poll failed; the relay reads again after its poll interval", "err", err,
					"retry_in", r.cfg.PollInterval)
				polling = false
				continue
			}
			if len(shards) > 0 {
				return shards, at, nil
			}
			arm()
		}
	}
}

// headPollEvery is the head poll's interval after idle without events (see
// HeadPollMaxInterval).
func (c LogRelayConfig) headPollEvery(idle time.Duration) time.Duration {
	return logdelivery.HeadPollEvery(idle, c.HeadPollInterval, c.HeadPollMaxInterval)
}

// logHubs holds each Log's in-process wake-up hub, keyed weakly by the Log so that an
// entry goes when its Log is collected (a cleanup deletes it). The hub is not a field
// of Log: relays find it through the Log they were built on, as appenders do.
var logHubs sync.Map // weak.Pointer[Log] → *hub.Hub

// wakeups returns l's hub of waiting relays.
func (l *Log) wakeups() *hub.Hub {
	key := weak.Make(l)
	if h, ok := logHubs.Load(key); ok {
		return h.(*hub.Hub)
	}
	h, loaded := logHubs.LoadOrStore(key, new(hub.Hub))
	if !loaded {
		runtime.AddCleanup(l, func(k weak.Pointer[Log]) { logHubs.Delete(k) }, key)
	}
	return h.(*hub.Hub)
}

// Committed wakes this process's LogRelays of l (those built on l) that are waiting
// for events, so that they read the log at once instead of at their next poll. Call
// it after a transaction that appended to l with AppendTx has committed, when that
// transaction is not Transact's: the relays then need not find the commit by their
// head polls (faster for 20 ms after an append of this process, see
// log_appendhint.go, but still a round trip or two later). It is a hint only: a
// relay woken when nothing was committed reads nothing; one not woken finds the
// events at its next head poll or PollInterval. It never blocks, and it sends nothing
// to the database.
func (l *Log) Committed() {
	l.wakeups().Wake(nil, true)
}
