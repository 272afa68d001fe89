package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// Migration 4 upgrades a database of version 3 that holds events and a paused type: it
// gives the paused-types table statistics (so that claims are planned for what it
// holds) and leaves every event and pause as it was.
func TestMigration4AnalyzesThePausedTypesOfAVersion3Database(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	cfg := postgres.Config{Schema: freshSchema(t, pool), Logger: outboxtest.Discard}
	if err := postgres.MigrateTo(ctx, pool, cfg, 3); err != nil {
		t.Fatal(err)
	}
	// Rows as version 3 wrote them.
	if _, err := pool.Exec(ctx, `INSERT INTO `+cfg.Schema+`.outbox_events (id, type, entity_id, user_id, status, created_at, updated_at, next_attempt_at)
		VALUES (gen_random_uuid(), 'kept', 'e1', 'u', 'pending', now(), now(), now()),
		       (gen_random_uuid(), 'held', 'e2', 'u', 'pending', now(), now(), now());
		INSERT INTO `+cfg.Schema+`.outbox_events_paused_types (type, paused_at) VALUES ('held', now())`); err != nil {
		t.Fatal(err)
	}
	reltuples := func() float64 {
		var n float64
		if err := pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::regclass`, cfg.Schema+".outbox_events_paused_types").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := reltuples(); n >= 0 {
		t.Fatalf("before migration 4 the paused table has statistics (reltuples %v); the test needs a never-analyzed one", n)
	}
	applied, err := postgres.Migrate(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 || applied[0] != 4 {
		t.Fatalf("applied %v, want [4]", applied)
	}
	if n := reltuples(); n != 1 {
		t.Fatalf("after migration 4 the paused table's statistics count %v rows, want 1", n)
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	now := time.Now()
	events, err := s.Claim(ctx, outbox.ClaimParams{Owner: "o", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Type != "kept" {
		t.Fatalf("claimed %v, want the one event of the type not paused", events)
	}
	paused, err := s.PausedTypes(ctx)
	if err != nil || len(paused) != 1 || paused[0].Type != "held" {
		t.Fatalf("paused types %v (%v), want [held]", paused, err)
	}
}

// Claims are planned from the paused table's statistics, so PauseType and ResumeType
// refresh them: autovacuum would wait for 50 changes.
func TestPauseAndResumeKeepThePausedTypesStatisticsCurrent(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	ctx := context.Background()
	table := s.Config().Schema + ".outbox_events_paused_types"
	reltuples := func() float64 {
		var n float64
		if err := s.Pool().QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::regclass`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, typ := range []string{"a", "b"} {
		if err := s.PauseType(ctx, typ, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := reltuples(); n != 2 {
		t.Fatalf("after pausing 2 types the statistics count %v rows", n)
	}
	if _, err := s.ResumeType(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if n := reltuples(); n != 1 {
		t.Fatalf("after resuming 1 of 2 types the statistics count %v rows", n)
	}
}
