package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// noop is a receiver that accepts everything, a batch at a time.
type noop struct{}

func (noop) Handle(context.Context, outbox.Event) error { return nil }
func (noop) HandleBatch(_ context.Context, events []outbox.Event) []error {
	return make([]error, len(events))
}

// enqueueN writes n events in batches of 1000, each event its own entity.
func enqueueN(tb testing.TB, s *postgres.Store, n int, prefix string) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			e := outbox.NewEvent(outbox.TypeProgressEntry, fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("user-%d", i%100))
			e.Payload = []byte(`{"kind":"weight","quantity":72.5}`)
			batch = append(batch, e)
		}
		if err := s.Enqueue(ctx, time.Now(), batch...); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkDrain measures how fast one processor empties a backlog into a receiver
// that accepts everything: claim, deliver and record, batch after batch.
func BenchmarkDrain(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			pool := newPool(b, 8, "")
			s := newStore(b, pool, postgres.Config{DisableListen: true})
			enqueueN(b, s, b.N, "e")
			ts := &timedStore{Store: s}
			p, err := outbox.NewProcessor(ts, noop{}, outbox.Config{BatchSize: batch, MaxConcurrent: batch, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			n, err := p.Drain(context.Background())
			b.StopTimer()
			if err != nil || n != b.N {
				b.Fatalf("drained %d of %d: %v", n, b.N, err)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(ts.claim.Microseconds())/float64(ts.claims), "claim-µs/batch")
			b.ReportMetric(float64(ts.settle.Microseconds())/float64(ts.claims), "settle-µs/batch")
		})
	}
}

type timedStore struct {
	*postgres.Store
	claims        int
	claim, settle time.Duration
}

func (s *timedStore) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	t := time.Now()
	defer func() { s.claim += time.Since(t); s.claims++ }()
	return s.Store.Claim(ctx, p)
}

func (s *timedStore) Settle(ctx context.Context, owner string, now time.Time, o []outbox.Outcome) error {
	t := time.Now()
	defer func() { s.settle += time.Since(t) }()
	return s.Store.Settle(ctx, owner, now, o)
}
