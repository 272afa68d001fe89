package sqlite_test

// The life of one event told as an application sees it: created with its data, retried
// by an operator, delivered end to end, and gone with a rolled-back transaction.

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// progressRepo is a minimal repository of an application table on the same database.
type progressRepo struct{ db *sql.DB }

func newProgressRepo(t *testing.T, s *sqlite.Store) progressRepo {
	t.Helper()
	if _, err := s.DB().Exec(createEntries); err != nil {
		t.Fatal(err)
	}
	return progressRepo{s.DB()}
}

// saveWeight is an application use case: the entry and its outbox event
// in one transaction.
func saveWeight(ctx context.Context, s *sqlite.Store, id, userID string, kg float64, failAfterEvent bool) error {
	return s.Transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO progress_entries (id, user_id, kind, quantity, date) VALUES (?, ?, 'weight', ?, ?)`,
			id, userID, kg, time.Now().Unix()); err != nil {
			return err
		}
		e := outbox.NewEvent("order.created", id, userID)
		e.IsNewRecord, e.Priority, e.OrderingKey = true, 10, id
		if err := s.EnqueueTx(ctx, tx, e); err != nil {
			return err
		}
		if failAfterEvent {
			return errors.New("the app crashed before commit")
		}
		return nil
	})
}

func TestEventIsCreatedWithItsData(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	e := outbox.NewEvent("order.created", "6f1c2a7e-entry", "test-user")
	e.IsNewRecord = true
	if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != "order.created" || got.EntityID != "6f1c2a7e-entry" || got.Status != outbox.StatusPending {
		t.Fatalf("created event: type %q entity %q status %q", got.Type, got.EntityID, got.Status)
	}
}

func TestOperatorRetryResetsAFailedEvent(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	clock := outboxtest.NewClock(outboxtest.T0)
	failing := outbox.HandlerFunc(func(context.Context, outbox.Event) error { return errors.New("network error") })
	p, err := outbox.NewProcessor(s, failing, outbox.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	e := outbox.NewEvent("order.created", "entry", "test-user")
	if err := s.Enqueue(ctx, clock.Now(), e); err != nil {
		t.Fatal(err)
	}
	// createFailedEvent(attemptCount: 2)
	p.ProcessBatch(ctx)
	clock.Advance(time.Hour)
	p.ProcessBatch(ctx)
	event, err := s.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if event.Status != outbox.StatusFailed || event.Attempts != 2 {
		t.Fatalf("setup: status %q attempts %d, want failed after 2", event.Status, event.Attempts)
	}
	event.ResetForRetry(clock.Now())
	if err := s.Update(ctx, clock.Now(), &event); err != nil {
		t.Fatal(err)
	}
	stored, err := s.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Status != outbox.StatusPending || stored.Attempts != 0 || stored.GivenUp() {
		t.Fatalf("after ResetForRetry: status %q, %d attempts, given up %v; want pending with a fresh budget", stored.Status, stored.Attempts, stored.GivenUp())
	}
}

func TestEndToEndSync(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	repo := newProgressRepo(t, s)
	type synced struct {
		id string
		kg float64
	}
	remote := make(chan synced, 10) // the backend receives entries here
	sync := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		var kg float64
		if err := repo.db.QueryRowContext(ctx, `SELECT quantity FROM progress_entries WHERE id = ?`, e.EntityID).Scan(&kg); err != nil {
			return outbox.Permanent(err)
		}
		remote <- synced{e.EntityID, kg}
		return nil
	})
	// An hour between polls: only the trigger (or the commit's wake-up) can start a cycle.
	p, err := outbox.NewProcessor(s, outbox.Handlers{"order.created": sync},
		outbox.Config{UserID: "user-1", PollInterval: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// 1. Create progress entry
	if err := saveWeight(ctx, s, "entry-72", "user-1", 72.0, false); err != nil {
		t.Fatal(err)
	}
	// 2. Verify outbox event created
	events, err := s.List(ctx, outbox.Filter{UserID: "user-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].EntityID != "entry-72" {
		t.Fatalf("events %+v, want one for entry-72", events)
	}
	// 3. Trigger processing
	p.Trigger("user-1")
	// 4. Wait for processing: the backend receives the entry, then Stop records the outcome.
	select {
	case got := <-remote:
		// 6. Verify data synced to remote
		if got != (synced{"entry-72", 72.0}) {
			t.Fatalf("remote received %+v, want entry-72 = 72", got)
		}
	case <-time.After(time.Minute): // generous: a busy machine must not fail it
		t.Fatal("entry not synced within a minute")
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// 5. Verify event completed
	e, err := s.Get(ctx, events[0].ID)
	if err != nil || e.Status != outbox.StatusCompleted {
		t.Fatalf("event status %q (%v), want completed", e.Status, err)
	}
}

func TestRolledBackTransactionLeavesNeitherDataNorEvent(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	newProgressRepo(t, s)
	err := saveWeight(ctx, s, "entry-1", "u", 80, true)
	if err == nil {
		t.Fatal("the failing use case reported success")
	}
	var rows, events int
	if err := s.DB().QueryRow(`SELECT count(*) FROM progress_entries`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().QueryRow(`SELECT count(*) FROM outbox_events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || events != 0 {
		t.Fatalf("after rollback: %d data rows and %d events, want neither", rows, events)
	}
	if err := saveWeight(ctx, s, "entry-2", "u", 80, false); err != nil {
		t.Fatal(err)
	}
	s.DB().QueryRow(`SELECT count(*) FROM progress_entries`).Scan(&rows)
	s.DB().QueryRow(`SELECT count(*) FROM outbox_events`).Scan(&events)
	if rows != 1 || events != 1 {
		t.Fatalf("after commit: %d data rows and %d events, want both", rows, events)
	}
}
