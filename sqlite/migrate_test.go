package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/migrate"
)

// A database left at version 1 by an older release is upgraded in place: its events
// stay, and the window counts (which read migration 2's index) see them.
func TestMigrateUpgradesVersion1InPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "old.db"), OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := migrate.Run(ctx, target(db), migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, db, Config{}); !errors.Is(err, ErrNotMigrated) {
		t.Fatalf("New on a version-1 database: %v, want ErrNotMigrated", err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := db.ExecContext(ctx, `INSERT INTO outbox_events (id, type, entity_id, status, attempts, created_at, updated_at)
		VALUES ('0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f', 't', 'e', 'failed', 5, ?, ?)`, now.UnixMicro(), now.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	applied, err := Migrate(ctx, db)
	if err != nil || !slices.Equal(applied, []int{2, 3}) {
		t.Fatalf("Migrate = %v, %v; want [2 3] (paused types, the health window)", applied, err)
	}
	s, err := New(ctx, db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx, outbox.StatsQuery{Now: now.Add(time.Minute), Window: time.Hour})
	if err != nil || st.GivenUp != 1 || st.Recent.GivenUp != 1 {
		t.Fatalf("after the upgrade: %+v, %v; want the given-up event kept and in the window", st, err)
	}
}
