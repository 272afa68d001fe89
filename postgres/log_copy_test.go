package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// CopyCursor on a log of 4 shards copies each shard's position of the cursor: the
// copy reads what the original has not read, in every shard, and nothing it has. A
// shard where the original has no row yet stays without one for the copy too (both
// are at the start of the log there). The outboxtest log suite covers the rest
// (refusals, a split into scopes) on one shard.
func TestLogCopyCursorCopiesEveryShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newShardedRelayEnv(t, 8, 4)
	names := make([]string, 16)
	for i := range names {
		names[i] = fmt.Sprintf("k%d/1", i) // 16 keys, over every shard
	}
	appendKeyed(t, env.log, env.pool, names...)
	if st, err := env.relay(t, &logReceiver{}, postgres.LogRelayConfig{Cursor: "all", Concurrency: 4}).Drain(ctx); err != nil || st.Delivered != 16 {
		t.Fatalf("drain all: %+v, %v", st, err)
	}
	later := appendKeyed(t, env.log, env.pool, "k1/2", "k6/2", "k11/2")
	if err := env.log.CopyCursor(ctx, "all", "copy"); err != nil {
		t.Fatal(err)
	}
	positions, err := env.log.CursorPositions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	xmin := map[string]uint64{}
	for _, p := range positions {
		xmin[p.Name] = p.XMin
	}
	for shard := range 4 {
		a, c := fmt.Sprintf("all/%d", shard), fmt.Sprintf("copy/%d", shard)
		if _, ok := xmin[c]; !ok || xmin[c] != xmin[a] {
			t.Errorf("shard %d: the copy is at xmin %d (present %v), the original at %d", shard, xmin[c], ok, xmin[a])
		}
	}
	rec := &logReceiver{}
	if st, err := env.relay(t, rec, postgres.LogRelayConfig{Cursor: "copy", Concurrency: 4}).Drain(ctx); err != nil || st.Read != 3 {
		t.Fatalf("drain copy: %+v, %v; want the 3 appended since", st, err)
	}
	want := []string{later[0].EntityID, later[1].EntityID, later[2].EntityID}
	if got := rec.entities(); !sameSet(got, want) {
		t.Errorf("the copy delivered %v, want %v", got, want)
	}

	// A cursor with a row in one shard only.
	if _, err := env.log.ShardCursor(ctx, "partial", 2); err != nil {
		t.Fatal(err)
	}
	if err := env.log.CopyCursor(ctx, "partial", "partial-copy"); err != nil {
		t.Fatal(err)
	}
	positions, err = env.log.CursorPositions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, p := range positions {
		if strings.HasPrefix(p.Name, "partial-copy/") {
			rows = append(rows, p.Name)
		}
	}
	if !slices.Equal(rows, []string{"partial-copy/2"}) {
		t.Errorf("the copy of a cursor of one shard has rows %v, want partial-copy/2 only", rows)
	}
	if err := env.log.CopyCursor(ctx, "all", "partial-copy"); !errors.Is(err, postgres.ErrLogCursorExists) {
		t.Errorf("copy onto a cursor with a row in one shard: %v, want ErrLogCursorExists", err)
	}
}

// CopyCursor waits for a step of a relay of the original that is delivering, and
// copies the position that step moves it to: the copy does not read that batch again,
// and Retain cannot pass a position the copy is about to take.
func TestLogCopyCursorWaitsForTheStepInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newLogRelayEnv(t, nil)
	appendKeyed(t, env.log, env.pool, "a/1", "b/1")
	entered, release := make(chan struct{}), make(chan struct{})
	rec := &logReceiver{fail: func(e outbox.Event, _ int) error {
		if e.EntityID == "a/1" {
			close(entered)
			<-release
		}
		return nil
	}}
	r := env.relay(t, rec, postgres.LogRelayConfig{Cursor: "all", MaxConcurrent: 1})
	drained := make(chan error, 1)
	go func() {
		_, err := r.Drain(ctx)
		drained <- err
	}()
	<-entered
	other := env.otherProcess(t, 1, "copy-cursor-waits")
	var pid int
	if err := other.pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() { copied <- other.log.CopyCursor(ctx, "all", "copy") }()
	waitForLockWait(t, env.pool, pid)
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if n, _, err := env.log.Waiting(ctx, "copy"); err != nil || n != 0 {
		t.Errorf("%d events wait for the copy (%v): it should have the position after the step's batch", n, err)
	}
}
