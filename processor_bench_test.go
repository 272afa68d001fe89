package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// batchStore hands out the same claimed batch forever and records nothing: what is
// left to measure is the processor's own work per event.
type batchStore struct {
	outbox.Store
	batch []outbox.Event
}

func (s *batchStore) Claim(_ context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	return s.batch[:min(p.Limit, len(s.batch))], nil
}

func (s *batchStore) Settle(context.Context, string, time.Time, []outbox.Outcome) error { return nil }

// BenchmarkProcessBatch is the processor's overhead per delivered event (claim and
// settle cost nothing here), with a logger at Info level that drops debug lines, as in production.
func BenchmarkProcessBatch(b *testing.B) {
	for _, tc := range []struct {
		name          string
		batch, concur int
	}{
		{"batch=10/concurrent=3", 10, 3},
		{"batch=1000/concurrent=100", 1000, 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := &batchStore{}
			now := time.Now()
			for range tc.batch {
				e := outbox.NewEvent("order.created", "entity", "user")
				if err := e.Prepare(now, 0); err != nil {
					b.Fatal(err)
				}
				s.batch = append(s.batch, *e)
			}
			noop := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
			p, err := outbox.NewProcessor(s, noop, outbox.Config{BatchSize: tc.batch, MaxConcurrent: tc.concur, Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.ProcessBatch(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tc.batch), "ns/event")
		})
	}
}
