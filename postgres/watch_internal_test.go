package postgres

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// countingQuerier counts the watcher's looks and fails each one, which ends the watch
// of the seqs it looked for (the relays' poll is the fallback).
type countingQuerier struct{ n atomic.Int64 }

func (q *countingQuerier) Query(context.Context, string, ...any) (pgx.Rows, error) {
	q.n.Add(1)
	return nil, errors.New("connection refused")
}

// A steady stream of enqueues always has some seq about to be due; the watcher still
// looks once per interval for all of them, not once per seq. Looks are counted against
// the time the stream really took, so a slow machine only makes fewer of them.
func TestWatcherLooksOncePerIntervalUnderAStream(t *testing.T) {
	const interval = 5 * time.Millisecond
	q := &countingQuerier{}
	w := newWatcher(q, "look", "ch", interval, slog.New(slog.NewTextHandler(io.Discard, nil)), func(map[string]struct{}) {})
	start := time.Now()
	var seq int64
	for time.Since(start) < 40*interval {
		seq++
		w.add(time.Now(), seq)
		time.Sleep(interval / 50) // a seq every 100µs at most, as from busy writers
	}
	w.close()
	elapsed := time.Since(start)
	looks, most := q.n.Load(), int64(elapsed/interval)+2
	if looks == 0 || looks > most {
		t.Fatalf("%d seqs over %v: %d looks, want 1 to %d (one per %v)", seq, elapsed.Round(time.Millisecond), looks, most, interval)
	}
	t.Logf("%d seqs over %v: %d looks", seq, elapsed.Round(time.Millisecond), looks)
}
