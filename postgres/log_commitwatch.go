package postgres

// The commit watch: a wake-up for this process's relays when a transaction that
// appended with AppendTx commits, for appenders that neither use Log.Transact nor call
// Log.Committed. AppendTx learns its transaction's ID from the INSERT (RETURNING xid);
// while a relay of the log in this process waits for events, a goroutine asks the
// server, every logCommitWatchEvery, whether the watched transactions have ended, and
// wakes the relays when one committed. Without it such a relay finds the commit by its
// head poll, on average half a HeadPollInterval later and with one more round trip
// (the look at the log that tells a commit to the log from any other).
//
// It costs nothing when no relay of the log runs in this process, or none waits (a
// relay that is reading finds the commit at its next step anyway), and each look is
// one statement that reads no table (pg_xact_status of the IDs). A transaction is
// watched for logCommitWatchFor at most: one that stays open longer is left to the
// head poll, so a long transaction costs a bounded number of looks.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// logCommitWatchEvery is how often the watch looks while it has transactions
	// to watch and a relay waits: a quarter of the default head poll, so that the
	// commit is found sooner than the poll would on average.
	logCommitWatchEvery = DefaultLogRelayHeadPollInterval / 4
	// logCommitWatchFor is how long a transaction is watched after its append.
	logCommitWatchFor = 20 * time.Millisecond
	// logCommitWatchTimeout bounds one look.
	logCommitWatchTimeout = time.Second
)

// logCommitStatus asks for the status of transaction IDs: "committed", "aborted" or
// "in progress". It reads the commit log, not a table.
const logCommitStatus = `SELECT x, pg_xact_status(x::xid8) FROM unnest($1::text[]) AS x`

// commitWatch is a Log's watch. Its zero value is ready; the goroutine runs only while
// it has transactions to watch.
type commitWatch struct {
	waiting atomic.Int32 // relays of the log in this process waiting for events
	looks   atomic.Int64 // statements run, for tests

	mu      sync.Mutex
	xids    map[string]time.Time // transaction ID → when to stop watching it
	running bool
}

// watch adds the transaction xid, which has just appended to l, when a relay of l
// in this process could use the news.
func (l *Log) watchCommit(xid string) {
	w := &l.commits
	if xid == "" || l.wakeups().Empty() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.xids[xid]; ok {
		return
	}
	if w.xids == nil {
		w.xids = make(map[string]time.Time)
	}
	w.xids[xid] = time.Now().Add(logCommitWatchFor)
	if !w.running {
		w.running = true
		go l.runCommitWatch()
	}
}

// runCommitWatch looks every logCommitWatchEvery until nothing is left to watch.
func (l *Log) runCommitWatch() {
	w := &l.commits
	t := time.NewTicker(logCommitWatchEvery)
	defer t.Stop()
	var xids []string
	for range t.C {
		now := time.Now()
		xids = xids[:0]
		w.mu.Lock()
		for x, until := range w.xids {
			if now.After(until) {
				delete(w.xids, x)
				continue
			}
			xids = append(xids, x)
		}
		if len(xids) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		if w.waiting.Load() == 0 {
			continue // a relay that is reading sees the commit at its next step
		}
		ended, committed := l.lookAtCommits(xids)
		if len(ended) > 0 {
			w.mu.Lock()
			for _, x := range ended {
				delete(w.xids, x)
			}
			w.mu.Unlock()
		}
		if committed {
			l.Committed()
		}
	}
}

// lookAtCommits returns which of xids have ended, and whether any of them committed.
// A failed look returns nothing: the transactions stay watched until their time is up,
// and the head poll still finds their commits.
func (l *Log) lookAtCommits(xids []string) (ended []string, committed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), logCommitWatchTimeout)
	defer cancel()
	l.commits.looks.Add(1)
	rows, err := l.pool.Query(ctx, logCommitStatus, xids)
	if err != nil {
		return nil, false
	}
	defer rows.Close()
	for rows.Next() {
		var x string
		var status *string
		if err := rows.Scan(&x, &status); err != nil {
			return nil, false
		}
		switch {
		case status == nil: // too old to tell: long over
			ended = append(ended, x)
		case *status == "committed":
			ended, committed = append(ended, x), true
		case *status == "aborted":
			ended = append(ended, x)
		}
	}
	if rows.Err() != nil {
		return nil, false
	}
	return ended, committed
}
