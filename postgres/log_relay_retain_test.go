package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// A running LogRelay empties the partitions it has passed by itself, every
// RetainInterval: the application does not call Log.Retain. Events placed in
// partitions of their own (as the retention tests place them) are delivered once, and
// then their partitions are truncated while the relay runs.
func TestLogRelayRunRetainsTheLog(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 4, "")
	l := newRingLog(t, pool, ringConfig)
	store := newStore(t, pool, postgres.Config{Schema: l.Config().Schema, DisableListen: true})
	entities := entityNames("e", 3)
	var xids []uint64
	for _, e := range entities {
		xids = append(xids, appendXID(t, l, pool, e))
		burnXIDs(t, pool, 128)
	}
	// The relay's read then has a snapshot past every transaction older than the last
	// event, so that its position, once acknowledged, passes all three partitions.
	waitForRunningPast(t, pool, headXID(t, pool))

	recv := &logReceiver{}
	r, err := postgres.NewLogRelay(context.Background(), l, store, recv, postgres.LogRelayConfig{
		RetainInterval: time.Millisecond, PollInterval: 10 * time.Millisecond, Logger: outboxtest.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	deadline := time.Now().Add(time.Minute)
	for {
		left := tableEntities(t, l, pool)
		if len(left) == 0 {
			break
		}
		if ringCameRound(t, l, pool, xids[0]) {
			return // other sessions' xids took the ring round: what may be emptied is not what was placed
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute of Run the log still holds %v (delivered %v)", left, recv.entities())
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := recv.entities()
	slices.Sort(got)
	if !slices.Equal(got, entities) {
		t.Errorf("delivered %v, want each of %v once", got, entities)
	}
}
