package kafkainbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/inbox/kafkainbox"
)

// The consumer joined with the inbox: each record's effect commits with its event ID in
// the receiver's transaction, and the offset only after. A consumer that dies between
// the two (here: every record's first delivery) gets the record again, and the inbox
// answers "duplicate": one effect per event, twice the deliveries.
func TestConsumeWithTheInboxHasOneEffectPerEvent(t *testing.T) {
	c := newCluster(t, 1, 1)
	s := newSink(t, newClient(t, c), testTopic)
	var events []outbox.Event
	for i := range 20 {
		events = append(events, event("a", fmt.Sprintf("e%d", i)))
	}
	for i, err := range s.HandleBatch(context.Background(), events) {
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	r := inboxtest.NewReceiver(t)
	cons := newClient(t, c, kgo.ConsumerGroup("g-"+uuid.NewString()[:8]), kgo.ConsumeTopics(testTopic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crash := errors.New("died after the commit, before the offset")
	deliveries, seen := 0, map[string]bool{}
	fn := func(ctx context.Context, m kafkainbox.Message) error {
		deliveries++
		applied, err := r.Inbox.Process(ctx, m.EventID(), func(tx *sql.Tx) error { return r.Apply(ctx, tx, m.EventID()) })
		if err != nil {
			return err
		}
		if applied && !seen[m.EventID()] {
			seen[m.EventID()] = true
			return crash
		}
		if len(seen) == len(events) && !applied && deliveries == 2*len(events) {
			cancel()
		}
		return nil
	}
	for range 2*len(events) + 1 {
		err := kafkainbox.Consume(ctx, cons, fn)
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
}
