package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// The relay's connections are all cut (pg_terminate_backend: what a failover or a
// restart of the server does), again and again while it drains. It recovers by
// itself and nothing is lost: every event ends completed, delivered at least once,
// and more than once only when its first outcome could not be recorded and its
// lease ran out (which counts an attempt).
//
// Terminating an idle connection goes unnoticed (the pool drops it and takes another),
// and statements are short: terminated at a moment picked by the clock, the
// connections would often be idle and the test would exercise nothing. So each round
// catches one of the processor's Settle calls, locks its events' rows from another
// connection, waits until the Settle's statement is on the server waiting for that
// lock, and only then terminates: every round cuts a statement of the processor's in
// flight, and checks that the processor's Settle failed.
func TestRelayRecoversFromTerminatedConnectionsMidDrain(t *testing.T) {
	t.Parallel()
	const (
		events       = 10_000 // 100 batches: enough for the five rounds, at any size
		terminations = 5
	)
	app := randomName("outbox-fault-")
	failures := &countingHandler{}
	pool := newPool(t, 4, app)
	schema := freshSchema(t, pool)
	s := &settleTrap{Store: newStore(t, pool, postgres.Config{Schema: schema}), traps: make(chan heldSettle)}
	enqueueN(t, s.Store, events, "e")

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
	// wait polls cond until it holds, failing the test after a minute: generous, since
	// nothing here depends on how fast the machine is, only on what happens in order.
	wait := func(what string, cond func() (bool, error)) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
			ok, err := cond()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting (a minute) for %s", what)
			}
		}
	}
	table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	terminated := 0
	for round := range terminations {
		threshold := (round + 1) * events / (terminations + 2)
		for n := 0; n < threshold; {
			select {
			case n = <-progress:
			case <-time.After(time.Minute):
				t.Fatalf("round %d: stuck at %d deliveries", round, n)
			}
		}

		// Catch the processor's next Settle and hold its events' rows.
		held := heldSettle{ids: make(chan []string, 1), locked: make(chan struct{}), result: make(chan error, 1)}
		select {
		case s.traps <- held:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: the processor recorded no outcomes for a minute", round)
		}
		// Should the test fail from here on, these defers (which run before the
		// processor's Stop) let the held Settle go on, so that Stop does not wait for it.
		release := sync.OnceFunc(func() { close(held.locked) })
		defer release()
		ids := <-held.ids
		tx, err := admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background()) // if the test fails while the rows are locked
		var locker int32
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&locker); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM `+table+` WHERE id = ANY($1::uuid[]) FOR UPDATE`, ids); err != nil {
			t.Fatal(err)
		}
		release()
		// Once the Settle's statement (settleEvents: WITH completed AS ...; a lease
		// renewal, which may wait for the rows too, is an UPDATE) is on the server, it
		// cannot finish: it waits for the rows.
		wait("the held Settle's statement to wait for its rows", func() (bool, error) {
			var n int
			err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE application_name = $1 AND $2::int = ANY(pg_blocking_pids(pid)) AND query LIKE '%WITH completed AS%'`,
				app, locker).Scan(&n)
			return n > 0, err
		})

		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		terminated += n
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-held.result:
			if err == nil {
				t.Fatalf("round %d: the Settle waiting at the termination succeeded: it did not hit the processor's work", round)
			}
		case <-time.After(time.Minute):
			t.Fatalf("round %d: the held Settle did not return within a minute of the termination", round)
		}
	}
	if terminated < terminations {
		t.Fatalf("terminated %d connections in %d rounds", terminated, terminations)
	}

	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := s.Stats(ctx, outbox.StatsQuery{Now: time.Now(), StaleAfter: time.Hour})
		if err == nil && st.Completed == events {
			if st.Total != events {
				t.Fatalf("stats %+v: want %d events, all completed", st, events)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all events completed within 2 minutes: %+v (%v)", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := listAll(ctx, s.Store)
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
	// Each round checked that its termination failed a Settle of the processor's (which
	// may then record the outcomes one by one, without a warning).
	t.Logf("%d connections terminated in %d rounds, each failing a Settle in flight; the processor logged %d warnings; %d events, %d delivered more than once after a lost outcome",
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

// settleTrap is the processor's store, with a trap on Settle: a heldSettle sent on
// traps catches the next Settle, which hands over its events' IDs and waits for locked
// before it runs. The held call runs without its caller's deadline, so that it is still
// waiting for its rows when the test, however slow the machine, cuts its connection.
type settleTrap struct {
	*postgres.Store
	traps chan heldSettle
}

type heldSettle struct {
	ids    chan []string // the IDs of the caught Settle's outcomes
	locked chan struct{} // closed once their rows are locked: the Settle goes on
	result chan error    // what it returned
}

func (s *settleTrap) Settle(ctx context.Context, owner string, now time.Time, outcomes []outbox.Outcome) error {
	if len(outcomes) == 0 {
		return s.Store.Settle(ctx, owner, now, outcomes)
	}
	select {
	case h := <-s.traps:
		ids := make([]string, len(outcomes))
		for i, o := range outcomes {
			ids[i] = o.ID
		}
		h.ids <- ids
		<-h.locked
		err := s.Store.Settle(context.WithoutCancel(ctx), owner, now, outcomes)
		h.result <- err
		return err
	default:
		return s.Store.Settle(ctx, owner, now, outcomes)
	}
}

// countingHandler counts the warnings and errors a processor logs.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countingHandler) WithGroup(string) slog.Handler                { return h }
