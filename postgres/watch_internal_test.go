package postgres

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// quietWatcher is a watcher that looks through q, logs nothing and wakes nobody.
func quietWatcher(q poolQuerier, interval time.Duration) *watcher {
	return newWatcher(q, "look", "ch", interval, slog.New(slog.NewTextHandler(io.Discard, nil)), func(map[string]struct{}) {})
}

// recordingQuerier keeps the seqs of each look and fails it, which ends the watch of
// the seqs it looked for (the relays' poll is the fallback).
type recordingQuerier struct {
	mu    sync.Mutex
	looks [][]int64
}

func (q *recordingQuerier) Query(_ context.Context, _ string, args ...any) (pgx.Rows, error) {
	for _, a := range args {
		if named, ok := a.(pgx.NamedArgs); ok {
			q.mu.Lock()
			q.looks = append(q.looks, slices.Clone(named["seqs"].([]int64)))
			q.mu.Unlock()
		}
	}
	return nil, errors.New("connection refused")
}

// seen returns the seqs of each look so far.
func (q *recordingQuerier) seen() [][]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.looks)
}

// A steady stream of enqueues always has some seq about to be due; the watcher still
// looks once per interval for all of them, not once per seq. Looks are counted against
// the time the stream really took, so a slow machine only makes fewer of them.
func TestWatcherLooksOncePerIntervalUnderAStream(t *testing.T) {
	t.Parallel()
	const interval = 5 * time.Millisecond
	q := &recordingQuerier{}
	w := quietWatcher(q, interval)
	start := time.Now()
	var seq int64
	for time.Since(start) < 40*interval {
		seq++
		w.add(time.Now(), seq)
		time.Sleep(interval / 50) // a seq every 100µs at most, as from busy writers
	}
	w.close()
	elapsed := time.Since(start)
	looks, most := len(q.seen()), int(elapsed/interval)+2
	if looks == 0 || looks > most {
		t.Fatalf("%d seqs over %v: %d looks, want 1 to %d (one per %v)", seq, elapsed.Round(time.Millisecond), looks, most, interval)
	}
	t.Logf("%d seqs over %v: %d looks", seq, elapsed.Round(time.Millisecond), looks)
}

// A seq enqueued between two looks is looked for at the next one, not an interval after
// its own enqueue: a look reads any number of seqs, and waiting for each one's own due
// time added up to an interval to its wake-up under a stream of enqueues.
func TestWatcherLooksForEverySeqDueBeforeItsNextLook(t *testing.T) {
	t.Parallel()
	// Long enough that the second add comes before the first look even on a busy
	// machine: were the test stalled for an interval between the two adds, the first
	// look would rightly come without seq 2.
	const interval = 250 * time.Millisecond
	q := &recordingQuerier{}
	w := quietWatcher(q, interval)
	start := time.Now()
	w.add(start, 1)
	w.add(start.Add(3*interval/4), 2) // due 3/4 of an interval after seq 1
	// The first look comes from the timer, an interval after seq 1 (close would look
	// at everything still watched, so it must not come first).
	for deadline := time.Now().Add(time.Minute); len(q.seen()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not look within a minute")
		}
	}
	w.close()
	if first := q.seen()[0]; !slices.Contains(first, 1) || !slices.Contains(first, 2) {
		t.Fatalf("first look read seqs %v, want 1 and 2 (2 is due before the look after it); looks: %v", first, q.seen())
	}
}
