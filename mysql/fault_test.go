package mysql_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
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
//
// A KILL of an idle connection goes unnoticed (the driver sees it closed and takes
// another), and statements are short: killed at a moment picked by the clock, the
// connections would often be idle and the test would exercise nothing. So each round
// catches one of the processor's Settle calls, locks its events' rows from another
// connection, waits until the Settle's UPDATE is on the server waiting for that lock,
// and only then kills: every round's kill cuts a statement of the processor's in
// flight, and the round checks that the processor's Settle failed.
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
	table := freshTable(t, db)
	s := &settleTrap{Store: newStore(t, db, mysql.Config{Table: table}), traps: make(chan heldSettle)}
	enqueueKeyed(t, s.Store, events)

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
	killed := 0
	for round := range kills {
		threshold := (round + 1) * events / (kills + 2)
		for n := 0; n < threshold; {
			select {
			case n = <-progress:
			case <-time.After(time.Minute):
				t.Fatalf("round %d: stuck at %d deliveries", round, n)
			}
		}

		// Catch the processor's next Settle and hold its events' rows.
		held := heldSettle{caught: make(chan caughtSettle, 1), locked: make(chan struct{}), result: make(chan error, 1)}
		select {
		case s.traps <- held:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: the processor recorded no outcomes for a minute", round)
		}
		// Should the test fail from here on, these defers (which run before the
		// processor's Stop) let the held Settle go on, so that Stop does not wait for it.
		release := sync.OnceFunc(func() { close(held.locked) })
		defer release()
		caught := <-held.caught
		ids := caught.ids
		tx, err := admin.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() // if the test fails while the rows are locked
		lock := "SELECT seq FROM `" + database + "`.`" + table + "` WHERE id IN (UNHEX(REPLACE(?, '-', ''))" +
			strings.Repeat(", UNHEX(REPLACE(?, '-', ''))", len(ids)-1) + ") FOR UPDATE"
		lockArgs := make([]any, len(ids))
		for i, id := range ids {
			lockArgs[i] = id
		}
		if _, err := tx.ExecContext(ctx, lock, lockArgs...); err != nil {
			t.Fatal(err)
		}
		release()
		// Once the Settle's statement is on the server it cannot finish: it waits for
		// the rows. It is told from the others by its time, which it writes as Unix
		// microseconds (interpolated into the text: InterpolateParams). InnoDB's
		// INNODB_TRX would not do: MariaDB does not always list a transaction that
		// waits for its first row lock.
		stamp := strconv.FormatInt(outbox.Timestamp(caught.now).UnixMicro(), 10)
		wait("the held Settle's statement to reach the server", func() (bool, error) {
			var n int
			err := admin.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
				WHERE DB = ? AND COMMAND = 'Query' AND INSTR(INFO, ?) > 0`, database, stamp).Scan(&n)
			return n > 0, err
		})

		rows, err := admin.Query(`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?`, database)
		if err != nil {
			t.Fatal(err)
		}
		var conns []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, id)
		}
		rows.Close()
		for _, id := range conns {
			// A connection may have closed meanwhile: 1094, unknown thread.
			if _, err := admin.Exec(`KILL ?`, id); err == nil {
				killed++
			}
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-held.result:
			if err == nil {
				t.Fatalf("round %d: the Settle waiting at the kill succeeded: the kill did not hit the processor's work", round)
			}
		case <-time.After(time.Minute):
			t.Fatalf("round %d: the held Settle did not return within a minute of the kill", round)
		}
	}
	if killed < kills {
		t.Fatalf("killed %d connections in %d rounds", killed, kills)
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
	// Each round checked that its kill failed a Settle of the processor's (which may
	// then record the outcomes one by one, without a warning).
	t.Logf("%d connections killed in %d rounds, each failing a Settle in flight; the processor logged %d warnings; %d events, %d delivered more than once after a lost outcome",
		killed, kills, failures.n.Load(), len(all), redelivered)
}

// settleTrap is the processor's store, with a trap on Settle: a heldSettle sent on
// traps catches the next Settle, which hands over its events' IDs and waits for locked
// before it runs. The held call runs without its caller's deadline, so that it is still
// waiting for its rows when the test, however slow the machine, kills its connection.
type settleTrap struct {
	*mysql.Store
	traps chan heldSettle
}

type heldSettle struct {
	caught chan caughtSettle // what the caught Settle was to record
	locked chan struct{}     // closed once its events' rows are locked: the Settle goes on
	result chan error        // what it returned
}

type caughtSettle struct {
	ids []string  // the IDs of its outcomes
	now time.Time // the time it records
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
		h.caught <- caughtSettle{ids, now}
		<-h.locked
		err := s.Store.Settle(context.WithoutCancel(ctx), owner, now, outcomes)
		h.result <- err
		return err
	default:
		return s.Store.Settle(ctx, owner, now, outcomes)
	}
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
