package postgres_test

import (
	"context"
	"slices"
	"testing"

	"github.com/fitiq/outbox/postgres"
)

// peekEntities peeks and returns the events' entity IDs.
func peekEntities(t *testing.T, l *postgres.Log, cursor string, limit int) []string {
	t.Helper()
	events, err := l.Peek(context.Background(), cursor, limit)
	if err != nil {
		t.Fatalf("peek %q: %v", cursor, err)
	}
	return logEntities(events)
}

// cursorRows counts the log's cursor rows (every shard's).
func cursorRows(t *testing.T, l *postgres.Log) int {
	t.Helper()
	positions, err := l.CursorPositions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(positions)
}

// TestLogPeekListsWhatTheCursorHasNotPassed: Peek lists the committed events past the
// cursor's stored position in read order, never an open transaction's, also while a
// pair is read in parts (the pair's rest, then what committed after it), up to the
// limit, and makes no cursor row for a name that has none.
func TestLogPeekListsWhatTheCursorHasNotPassed(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	l := newTestLog(t, pool)
	check := func(step, cursor string, limit int, want ...string) {
		t.Helper()
		if got := peekEntities(t, l, cursor, limit); !slices.Equal(got, want) {
			t.Fatalf("%s: peek %q, limit %d: %v, want %v", step, cursor, limit, got, want)
		}
	}
	check("an empty log, no cursor", "relay", 10)
	if n := cursorRows(t, l); n != 0 {
		t.Fatalf("%d cursor rows after a peek of a name with none, want 0", n)
	}
	appendCommitted(t, l, pool, "a", "b")
	appendCommitted(t, l, pool, "c")
	open := beginTx(t, pool)
	appendInTx(t, l, open, "late")
	check("three committed, one open, no cursor", "relay", 10, "a", "b", "c")
	if n := cursorRows(t, l); n != 0 {
		t.Fatalf("%d cursor rows after peeks, want 0", n)
	}

	c := logCursor(t, l, "relay")
	readAckLog(t, c, 1) // a: the pair goes on
	check("in the middle of a pair", "relay", 10, "b", "c")
	commitTx(t, open)
	check("the pair's rest and a later commit", "relay", 10, "b", "c", "late")
	check("the pair's rest, limited", "relay", 1, "b")
	check("the pair's rest and part of the next", "relay", 2, "b", "c")
	check("the name with no cursor still reads from the start", "ghost", 10, "a", "b", "c", "late")
	if n := cursorRows(t, l); n != 1 {
		t.Fatalf("%d cursor rows, want the one Cursor made", n)
	}
	readAckLog(t, c, 10)
	readAckLog(t, c, 10)
	check("all read", "relay", 10)
}

// TestLogPeekMergesTheShards: on a sharded log, Peek lists every shard's waiting
// events by creation time, up to the limit, makes no cursor rows, and lists nothing
// once the relay has drained.
func TestLogPeekMergesTheShards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newShardedRelayEnv(t, 8, 4)
	pool := env.pool
	names := []string{"a/1", "b/1", "c/1", "d/1", "e/1", "f/1", "g/1", "h/1", "a/2", "b/2"}
	shards := map[int]bool{}
	for _, name := range names {
		// A transaction each, so that creation times follow the list.
		e := appendKeyed(t, env.log, pool, name)[0]
		shards[env.log.ShardOf(e.OrderingKey)] = true
	}
	if len(shards) < 3 {
		t.Fatalf("the keys fell in %d shards: pick others", len(shards))
	}
	if got := peekEntities(t, env.log, postgres.DefaultLogRelayCursor, 100); !slices.Equal(got, names) {
		t.Fatalf("peek: %v, want every shard's by creation time %v", got, names)
	}
	if got := peekEntities(t, env.log, postgres.DefaultLogRelayCursor, 3); !slices.Equal(got, names[:3]) {
		t.Fatalf("peek 3: %v, want %v", got, names[:3])
	}
	if n := cursorRows(t, env.log); n != 0 {
		t.Fatalf("%d cursor rows after peeks, want 0", n)
	}
	r := env.relay(t, &logReceiver{}, postgres.LogRelayConfig{})
	if _, err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := peekEntities(t, env.log, postgres.DefaultLogRelayCursor, 100); len(got) != 0 {
		t.Fatalf("after the drain, peek lists %v", got)
	}
	appendKeyed(t, env.log, pool, "c/2")
	if got := peekEntities(t, env.log, postgres.DefaultLogRelayCursor, 100); !slices.Equal(got, []string{"c/2"}) {
		t.Fatalf("one more appended: peek lists %v, want [c/2]", got)
	}
}
