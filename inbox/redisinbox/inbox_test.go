package redisinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/inbox/redisinbox"
	"github.com/fitiq/outbox/sink/redissink"
)

// The consumer joined with the inbox: each entry's effect commits with its event ID in
// the receiver's transaction, and the XACK only after. A consumer that dies between the
// two (here: every entry's first delivery) reads the entry again from its pending list,
// and the inbox answers "duplicate": one effect per event, twice the deliveries.
func TestConsumeWithTheInboxHasOneEffectPerEvent(t *testing.T) {
	rdb := redisClient(t)
	p := prefix(t, rdb)
	s := newSink(t, rdb, redissink.Config{Stream: p + ".{type}"})
	var events []outbox.Event
	for i := range 10 {
		events = append(events, event("a", fmt.Sprint(i)))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	r := inboxtest.NewReceiver(t)
	cfg := redisinbox.Config{Streams: []string{p + ".a"}, Group: "g", Consumer: "c1", Block: 50 * time.Millisecond}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crash := errors.New("died after the commit, before the XACK")
	deliveries, seen := 0, map[string]bool{}
	fn := func(ctx context.Context, m redisinbox.Message) error {
		deliveries++
		applied, err := r.Inbox.Process(ctx, m.EventID(), func(tx *sql.Tx) error { return r.Apply(ctx, tx, m.EventID()) })
		if err != nil {
			return err
		}
		if applied && !seen[m.EventID()] {
			seen[m.EventID()] = true
			return crash
		}
		if len(seen) == len(events) && deliveries == 2*len(events) {
			cancel()
		}
		return nil
	}
	for range 2*len(events) + 1 {
		err := redisinbox.Consume(ctx, rdb, cfg, fn)
		if err == nil || ctx.Err() != nil {
			break
		}
		if !errors.Is(err, crash) {
			t.Fatal(err)
		}
	}
	effects, distinct := r.Counts(t)
	t.Logf("%d deliveries, %d effects of %d events", deliveries, effects, distinct)
	if deliveries != 2*len(events) || effects != len(events) || distinct != len(events) {
		t.Fatalf("%d deliveries, %d effects of %d distinct events; want %d deliveries and one effect for each of %d events",
			deliveries, effects, distinct, 2*len(events), len(events))
	}
	if n := rdb.XPending(context.Background(), p+".a", "g").Val().Count; n != 0 {
		t.Fatalf("%d entries still pending, want 0", n)
	}
}
