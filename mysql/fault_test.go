package mysql_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

// freshDatabase creates a database no one else uses, dropped when t ends, so that
// the connections of one pool can be told apart in the process list.
func freshDatabase(t testing.TB) string {
	t.Helper()
	name := randomName("outbox_fault_")
	admin := sharedDB(t)
	if _, err := admin.Exec("CREATE DATABASE `" + name + "`"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return name
}

// The relay's connections are all killed (KILL: what a failover, a restart of the
// server or a DBA does), again and again while it drains. It recovers by itself and
// nothing is lost: every event ends completed, delivered at least once, and more than
// once only when its first outcome could not be recorded and its lease ran out (which
// counts an attempt).
func TestRelayRecoversFromKilledConnectionsMidDrain(t *testing.T) {
	const (
		events = 10_000
		kills  = 5
	)
	// The driver logs every connection it finds cut; here that is the point.
	if err := gomysql.SetLogger(log.New(io.Discard, "", 0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gomysql.SetLogger(log.New(os.Stderr, "[mysql] ", log.Ldate|log.Ltime|log.Lshortfile)) })
	database := freshDatabase(t)
	db := openDB(t, 4, func(c *gomysql.Config) { c.DBName = database; c.InterpolateParams = true })
	s := newStore(t, db, mysql.Config{})
	enqueueKeyed(t, s, events)

	failures := &countingHandler{}
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
		PollInterval:  200 * time.Millisecond,
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

	admin := sharedDB(t)
	killed := 0
	for round := range kills {
		threshold := (round + 1) * events / (kills + 2)
		for n := 0; n < threshold; {
			select {
			case n = <-progress:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: stuck at %d deliveries", round, n)
			}
		}
		rows, err := admin.Query(`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?`, database)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			// A connection may have closed meanwhile: 1094, unknown thread.
			if _, err := admin.Exec(`KILL ?`, id); err == nil {
				killed++
			}
		}
	}
	if killed < kills {
		t.Fatalf("killed %d connections in %d rounds", killed, kills)
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
		t.Fatal("the processor never saw a failure: the kills did not hit its work")
	}
	t.Logf("%d connections killed in %d rounds; the processor recovered from %d failed statements; %d events, %d delivered more than once after a lost outcome",
		killed, kills, failures.n.Load(), len(all), redelivered)
}

// listAll pages through every event of s.
func listAll(ctx context.Context, s *mysql.Store) ([]outbox.Event, error) {
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
