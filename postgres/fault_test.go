package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The relay's connections are all cut (pg_terminate_backend: what a failover or a
// restart of the server does), again and again while it drains. It recovers by
// itself and nothing is lost: every event ends completed, delivered at least once,
// and more than once only when its first outcome could not be recorded and its
// lease ran out (which counts an attempt).
func TestRelayRecoversFromTerminatedConnectionsMidDrain(t *testing.T) {
	const (
		events       = 20_000
		terminations = 5
	)
	app := randomName("outbox-fault-")
	failures := &countingHandler{}
	pool := newPool(t, 4, app)
	s := newStore(t, pool, postgres.Config{})
	enqueueN(t, s, events, "e")

	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		progress  = make(chan int, 1)
	)
	handler := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		mu.Lock()
		delivered[e.ID]++
		n := len(delivered)
		mu.Unlock()
		select {
		case progress <- n:
		default:
		}
		return nil
	})
	p, err := outbox.NewProcessor(s, handler, outbox.Config{
		BatchSize: 100, MaxConcurrent: 8,
		// Short, so that events whose claim committed unseen come back soon.
		LeaseDuration: 2 * time.Second,
		Logger:        slog.New(failures),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)

	admin := sharedPool(t)
	terminated := 0
	for round := range terminations {
		threshold := (round + 1) * events / (terminations + 2)
		for n := 0; n < threshold; {
			select {
			case n = <-progress:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: stuck at %d deliveries", round, n)
			}
		}
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		terminated += n
	}
	if terminated < terminations {
		t.Fatalf("terminated %d connections in %d rounds", terminated, terminations)
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := s.Stats(ctx, outbox.StatsQuery{Now: time.Now(), StaleAfter: time.Hour})
		if err == nil && st.Completed == events {
			if st.Total != events {
				t.Fatalf("stats %+v: want %d events, all completed", st, events)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all events completed within 60s: %+v (%v)", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := listAll(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	redelivered := 0
	for _, e := range all {
		n := delivered[e.ID]
		switch {
		case n == 0:
			t.Errorf("event %s completed but never delivered", e.ID)
		case n > e.Attempts:
			t.Errorf("event %s delivered %d times in %d attempts", e.ID, n, e.Attempts)
		case n > 1:
			redelivered++
		}
	}
	if failures.n.Load() == 0 {
		t.Fatal("the processor never saw a failure: the terminations did not hit its work")
	}
	t.Logf("%d connections terminated in %d rounds; the processor recovered from %d failed statements; %d events, %d delivered more than once after a lost outcome",
		terminated, terminations, failures.n.Load(), len(all), redelivered)
}

// listAll pages through every event of s.
func listAll(ctx context.Context, s *postgres.Store) ([]outbox.Event, error) {
	var all []outbox.Event
	for after := int64(0); ; {
		page, err := s.List(ctx, outbox.Filter{AfterSeq: after, Limit: 5000})
		if err != nil || len(page) == 0 {
			return all, err
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

// countingHandler counts the warnings and errors a processor logs.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countingHandler) WithGroup(string) slog.Handler                { return h }
