package kafkasink_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/kafkasink"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func enqueueN(t *testing.T, s outbox.Store, at time.Time, typ string, n int) []*outbox.Event {
	t.Helper()
	var evs []*outbox.Event
	for i := range n {
		evs = append(evs, outbox.NewEvent(typ, fmt.Sprintf("%s-%d", typ, i), "u"))
	}
	if err := s.Enqueue(context.Background(), at, evs...); err != nil {
		t.Fatal(err)
	}
	return evs
}

func stats(t *testing.T, p *outbox.Processor) outbox.Stats {
	t.Helper()
	st, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The broker is down for ten times the whole retry budget (1s+5s+30s+2m+10m, by the
// processor's clock): nothing is given up and no attempt is spent. When it is back on
// the same port, every event is delivered once.
func TestABrokerDownForTenRetryBudgetsGivesNothingUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func(opts ...kfake.Opt) *kfake.Cluster {
		c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	c := start(kfake.SeedTopics(1, testTopic))
	_, portStr, _ := net.SplitHostPort(c.ListenAddrs()[0])
	port, _ := strconv.Atoi(portStr)
	sink, err := kafkasink.New(newClient(t, c), kafkasink.Config{Topic: testTopic, ProbeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	store := sqlitetest.NewStore(t)
	clock := outboxtest.NewClock(outboxtest.T0)
	p, err := outbox.NewProcessor(store, sink, outbox.Config{Clock: clock, Logger: outboxtest.Discard,
		BatchSize: 20, HandlerTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	evs := enqueueN(t, store, clock.Now(), "a", 1)
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}

	c.Close()
	evs = append(evs, enqueueN(t, store, clock.Now(), "a", 20)...)
	budget := 10 * (time.Second + 5*time.Second + 30*time.Second + 2*time.Minute + 10*time.Minute)
	for elapsed := time.Duration(0); elapsed <= budget; elapsed += 10 * time.Minute {
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(10 * time.Minute) // past every retry delay and probe cooldown: each round may spend an attempt
	}
	if st := stats(t, p); st.Failed+st.GivenUp != 0 || st.Pending != 20 {
		t.Fatalf("after the outage: %d retrying, %d given up, %d pending; want all 20 pending, untouched", st.Failed, st.GivenUp, st.Pending)
	}
	if b := p.Breaker(); !b.Open || b.Reason != outbox.ReasonUnreachable {
		t.Fatalf("breaker %+v: want open, the destination unreachable", b)
	}

	c = start(kfake.Ports(port))
	for range 100 {
		clock.Advance(time.Minute)
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if st := stats(t, p); st.Completed == len(evs) {
			break
		}
	}
	if st := stats(t, p); st.Completed != len(evs) || st.GivenUp != 0 {
		t.Fatalf("after the broker came back: %d of %d completed, %d given up", st.Completed, len(evs), st.GivenUp)
	}
	n := idsIn(readTopic(t, c, testTopic))
	for _, e := range evs {
		if n[e.ID] != 1 {
			t.Errorf("event %s is in the topic %d times, want once", e.EntityID, n[e.ID])
		}
	}
}

// A running relay whose topic is deleted holds that topic's events (nothing given up)
// and, once the topic is recreated, delivers them without a restart.
func TestATopicRecreatedUnderARunningRelayIsDeliveredWithoutARestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1)
	cl := newClient(t, c)
	sink := newSink(t, cl, testTopic)
	store := sqlitetest.NewStore(t)
	p, err := outbox.NewProcessor(store, sink, outbox.Config{Logger: outboxtest.Discard, PollInterval: 20 * time.Millisecond,
		Breaker: outbox.BreakerConfig{Cooldown: 20 * time.Millisecond, MaxCooldown: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within a minute: %+v, breaker %+v", what, stats(t, p), p.Breaker())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := enqueueN(t, store, time.Now(), "a", 5)
	waitFor("delivery of the first events", func() bool { return stats(t, p).Completed == len(before) })

	admin := kadm.NewClient(cl)
	if _, err := admin.DeleteTopics(ctx, testTopic); err != nil {
		t.Fatal(err)
	}
	after := enqueueN(t, store, time.Now(), "b", 10)
	waitFor("hold on the deleted topic", func() bool {
		b := p.Breaker()
		return len(b.Targets) == 1 && b.Targets[0].Target == testTopic && b.Targets[0].Reason == outbox.ReasonTargetMissing
	})
	if st := stats(t, p); st.Failed+st.GivenUp != 0 {
		t.Fatalf("while the topic is missing: %d retrying, %d given up; want none", st.Failed, st.GivenUp)
	}

	if _, err := admin.CreateTopic(ctx, 1, 1, nil, testTopic); err != nil {
		t.Fatal(err)
	}
	waitFor("delivery after the topic was recreated", func() bool { return stats(t, p).Completed == len(before)+len(after) })
	if st := stats(t, p); st.GivenUp != 0 {
		t.Fatalf("%d given up", st.GivenUp)
	}
	n := idsIn(readTopic(t, c, testTopic))
	for _, e := range after {
		if n[e.ID] != 1 {
			t.Errorf("event %s is in the recreated topic %d times, want once", e.EntityID, n[e.ID])
		}
	}
}
