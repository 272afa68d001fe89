package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox/postgres"
)

// TestLogWaitingCountsWhatTheCursorHasNotPassed: Waiting counts the committed events
// past the cursor's stored position, never an open transaction's, also while a pair is
// read in parts (the pair's rest and what committed after it), and gives the oldest
// one's creation time.
func TestLogWaitingCountsWhatTheCursorHasNotPassed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	c := logCursor(t, l, "relay")
	check := func(step string, want int64, notBefore time.Time) {
		t.Helper()
		n, oldest, err := c.Waiting(ctx)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if n != want || oldest.IsZero() != (want == 0) || oldest.Before(notBefore.Truncate(time.Microsecond)) {
			t.Fatalf("%s: %d waiting, oldest %v; want %d, oldest not before %v", step, n, oldest, want, notBefore)
		}
	}
	check("an empty log", 0, time.Time{})
	t0 := time.Now()
	appendCommitted(t, l, pool, "a", "b")
	t1 := time.Now()
	appendCommitted(t, l, pool, "c")
	open := beginTx(t, pool)
	appendInTx(t, l, open, "late")
	check("three committed, one open", 3, t0)

	readAckLog(t, c, 2) // a, b: the pair goes on
	check("in the middle of a pair", 1, t1)
	commitTx(t, open)
	check("the pair's rest and a later commit", 2, t1)
	if got := readAckLog(t, c, 10); len(got) != 1 || got[0] != "c" {
		t.Fatalf("the pair's rest: %v", got)
	}
	check("the later commit", 1, t1)
	readAckLog(t, c, 10)
	check("all read", 0, time.Time{})
}

// TestLogRelayWaitingSumsTheShards: a relay's Waiting is every shard's, and nothing once
// it has drained.
func TestLogRelayWaitingSumsTheShards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newShardedRelayEnv(t, 8, 4)
	pool := env.pool
	r := env.relay(t, &logReceiver{}, postgres.LogRelayConfig{})
	events := appendKeyed(t, env.log, pool, "a/1", "b/1", "c/1", "d/1", "e/1", "f/1", "g/1", "h/1")
	shards := map[int]bool{}
	for _, e := range events {
		shards[env.log.ShardOf(e.OrderingKey)] = true
	}
	if len(shards) < 2 {
		t.Fatalf("the keys fell in %d shard: pick others", len(shards))
	}
	n, oldest, err := r.Waiting(ctx)
	if err != nil || n != 8 || !oldest.Equal(events[0].CreatedAt.Truncate(time.Microsecond)) {
		t.Fatalf("before the drain: %d waiting, oldest %v (%v); want 8, oldest %v", n, oldest, err, events[0].CreatedAt)
	}
	if n, _, err := env.log.Waiting(ctx, postgres.DefaultLogRelayCursor); err != nil || n != 8 {
		t.Fatalf("Log.Waiting of the relay's cursor: %d (%v), want 8", n, err)
	}
	if n, _, err := env.log.Waiting(ctx, "nobody"); err != nil || n != 8 {
		t.Fatalf("Log.Waiting of a name with no cursor: %d (%v), want the whole log, 8", n, err)
	}
	positions, err := env.log.CursorPositions(ctx)
	if err != nil || len(positions) != 4 {
		t.Fatalf("cursor positions %v (%v): want the relay's 4, Waiting made none", positions, err)
	}
	if _, err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n, oldest, err := r.Waiting(ctx); err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("after the drain: %d waiting, oldest %v (%v)", n, oldest, err)
	}
}
