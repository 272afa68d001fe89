package outbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// hangingStore is a real store whose claims hang (until their context ends) while
// hang is set: a connection that went silent.
type hangingStore struct {
	outbox.Store
	hang   atomic.Bool
	hung   atomic.Int32
	claims atomic.Int32
}

func (s *hangingStore) Claim(ctx context.Context, p outbox.ClaimParams) ([]outbox.Event, error) {
	s.claims.Add(1)
	if s.hang.Load() {
		s.hung.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.Claim(ctx, p)
}

func TestBoundStoreAbandonsAHungCall(t *testing.T) {
	hs := &hangingStore{Store: sqlitetest.NewStore(t)}
	hs.hang.Store(true)
	s := outbox.BoundStore(hs, 50*time.Millisecond, outboxtest.Discard)
	_, err := s.Claim(context.Background(), outbox.ClaimParams{Owner: "o", Now: time.Now(), Limit: 1})
	if !errors.Is(err, outbox.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "claim") {
		t.Fatalf("hung claim returned %v; want ErrTimeout and DeadlineExceeded naming the claim", err)
	}
	// A caller's own cancellation is not a timeout of the store.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Claim(ctx, outbox.ClaimParams{Owner: "o", Now: time.Now(), Limit: 1}); errors.Is(err, outbox.ErrTimeout) {
		t.Fatalf("cancelled claim reported as a store timeout: %v", err)
	}
	if outbox.BoundStore(hs, 0, nil) != outbox.Store(hs) {
		t.Fatal("BoundStore with no timeout must return the store itself")
	}
}

// TestProcessorGetsPastAHungClaim: a claim that never answers is abandoned at the
// round-trip deadline and the next one delivers, without anything else waking the
// processor.
func TestProcessorGetsPastAHungClaim(t *testing.T) {
	hs := &hangingStore{Store: sqlitetest.NewStore(t)}
	if err := hs.Enqueue(context.Background(), time.Now(), outbox.NewEvent("t", "e", "u")); err != nil {
		t.Fatal(err)
	}
	hs.hang.Store(true)
	handler, got := delivered()
	p, err := outbox.NewProcessor(hs, handler, outbox.Config{
		LeaseDuration: 300 * time.Millisecond, PollInterval: time.Hour, Logger: outboxtest.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Config().RoundTripTimeout != 100*time.Millisecond {
		t.Fatalf("RoundTripTimeout defaults to %s, want a third of the lease", p.Config().RoundTripTimeout)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	for hs.hung.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	hs.hang.Store(false) // the next connection answers
	if e := waitFor(t, got); e.EntityID != "e" {
		t.Fatalf("delivered %+v", e)
	}
}

func TestLeaseAndRoundTripLimits(t *testing.T) {
	store := sqlitetest.NewStore(t)
	noop := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
	tests := []struct {
		name  string
		cfg   outbox.Config
		field string
	}{
		{"lease of 2ns", outbox.Config{LeaseDuration: 2}, "Config.LeaseDuration"},
		{"lease under the minimum", outbox.Config{LeaseDuration: outbox.MinLeaseDuration - 1}, "Config.LeaseDuration"},
		{"round trip as long as the lease", outbox.Config{LeaseDuration: time.Second, RoundTripTimeout: time.Second}, "Config.RoundTripTimeout"},
		{"round trip longer than the default lease", outbox.Config{RoundTripTimeout: time.Hour}, "Config.RoundTripTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := outbox.NewProcessor(store, noop, tc.cfg)
			var fe *outbox.FieldError
			if p != nil || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("NewProcessor = %v, %v; want an error naming %s", p, err, tc.field)
			}
		})
	}
	if _, err := outbox.NewProcessor(store, noop, outbox.Config{LeaseDuration: outbox.MinLeaseDuration}); err != nil {
		t.Fatalf("the minimum lease is refused: %v", err)
	}
}
