package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// TestLogRelayRunTrimsTheLog: a running relay deletes what every cursor has passed by
// itself once its RetainInterval has passed (on its clock), keeping the row at the
// lowest position (the log's largest rowid is never deleted, so no rowid is reused);
// with chunks smaller than the log, one chunk between two steps, until done, with no
// further interval.
func TestLogRelayRunTrimsTheLog(t *testing.T) {
	t.Parallel()
	for _, chunk := range []int{0, 7} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			t.Parallel()
			testLogRelayRunTrimsTheLog(t, chunk)
		})
	}
}

// testLogRelayRunTrimsTheLog runs the test with trims of chunk events (0: the default).
func testLogRelayRunTrimsTheLog(t *testing.T, chunk int) {
	env := newRelayEnv(t)
	names := make([]string, 300)
	for i := range names {
		names[i] = fmt.Sprintf("k%d/1", i%7)
	}
	events := env.appendNames(t, names...)
	rec := &receiver{}
	clock := outboxtest.NewClock(time.Now())
	r := env.relay(t, rec, sqlite.LogRelayConfig{BatchSize: 50, RetainInterval: time.Hour, PollInterval: 10 * time.Millisecond, Clock: clock})
	if chunk > 0 {
		r.SetTrimLimit(chunk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(time.Minute)
	for len(rec.got()) < len(events) {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute of Run: %d of %d delivered", len(rec.got()), len(events))
		}
		time.Sleep(5 * time.Millisecond)
	}
	clock.Advance(time.Hour) // Run's first trim, at its start, found nothing to delete
	for {
		var rows int
		var low int64
		if err := env.db.QueryRow(`SELECT count(*), coalesce(min(seq), 0) FROM outbox_log`).Scan(&rows, &low); err != nil {
			t.Fatal(err)
		}
		if len(rec.got()) >= len(events) && rows == 1 {
			if last := events[len(events)-1].Seq; low != last {
				t.Fatalf("the row kept is %d, want the last event's %d", low, last)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute of Run: %d of %d delivered, %d rows in the log, want 1", len(rec.got()), len(events), rows)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLogDropCursorLetsTrimGoOn: a cursor no one reads holds every event from its
// position; dropping it lets Trim delete what the others passed. A cursor under a
// relay's lease is refused, and a name with no cursor is told apart.
func TestLogDropCursorLetsTrimGoOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newRelayEnv(t)
	if _, err := env.log.Cursor(ctx, "abandoned"); err != nil {
		t.Fatal(err)
	}
	events := env.appendNames(t, "a/1", "a/2", "b/1", "c/1")
	r := env.relay(t, &receiver{}, sqlite.LogRelayConfig{})
	if st, err := r.Drain(ctx); err != nil || st.Delivered != 4 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != 0 {
		t.Fatalf("trim behind the abandoned cursor deleted %d (%v), want 0", n, err)
	}
	if err := env.log.DropCursor(ctx, "nobody"); !errors.Is(err, sqlite.ErrLogCursorNotFound) {
		t.Fatalf("drop of no cursor: %v, want ErrLogCursorNotFound", err)
	}
	if err := env.log.DropCursor(ctx, sqlite.DefaultLogRelayCursor); !errors.Is(err, sqlite.ErrLogCursorBusy) {
		t.Fatalf("drop of the relay's leased cursor: %v, want ErrLogCursorBusy", err)
	}
	if err := env.log.DropCursor(ctx, "abandoned"); err != nil {
		t.Fatal(err)
	}
	if n, err := env.log.Trim(ctx, 100); err != nil || n != len(events)-1 {
		t.Fatalf("trim after the drop deleted %d (%v), want %d (all but the relay's position)", n, err, len(events)-1)
	}
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.log.DropCursor(ctx, sqlite.DefaultLogRelayCursor); err != nil {
		t.Fatalf("drop of a released cursor: %v", err)
	}
}
