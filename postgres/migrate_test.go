package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// Runs without a server: the configuration is refused before the pool is used (a
// pgxpool connects lazily).
func TestConfigIsValidatedAtConstruction(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tests := []struct {
		name  string
		cfg   postgres.Config
		field string
	}{
		{"schema with a quote", postgres.Config{Schema: `x"; DROP TABLE y; --`}, "postgres.Config.Schema"},
		{"schema starting with a digit", postgres.Config{Schema: "1outbox"}, "postgres.Config.Schema"},
		{"table with a dot", postgres.Config{Table: "a.b"}, "postgres.Config.Table"},
		{"table too long", postgres.Config{Table: strings.Repeat("t", 46)}, "postgres.Config.Table"},
		{"schema too long", postgres.Config{Schema: strings.Repeat("s", 64)}, "postgres.Config.Schema"},
		{"channel too long", postgres.Config{Channel: strings.Repeat("c", 64)}, "postgres.Config.Channel"},
		{"negative payload limit", postgres.Config{MaxPayloadBytes: -1}, "postgres.Config.MaxPayloadBytes"},
		{"negative debounce", postgres.Config{NotifyDebounce: -time.Millisecond}, "postgres.Config.NotifyDebounce"},
		{"negative watch interval", postgres.Config{WatchInterval: -time.Millisecond}, "postgres.Config.WatchInterval"},
		{"negative reconnect delay", postgres.Config{ReconnectMaxDelay: -time.Second}, "postgres.Config.ReconnectMaxDelay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, run := range map[string]func() error{
				"New":     func() error { _, err := postgres.New(context.Background(), pool, tc.cfg); return err },
				"Migrate": func() error { _, err := postgres.Migrate(context.Background(), pool, tc.cfg); return err },
			} {
				err := run()
				var fe *outbox.FieldError
				if !errors.Is(err, outbox.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("%s: %v; want an ErrInvalid FieldError naming %s", name, err, tc.field)
				}
			}
		})
	}
	if _, err := postgres.New(context.Background(), nil, postgres.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("New(nil pool) = %v, want ErrInvalid", err)
	}
}

func TestNewFailsClearlyOnAnUnmigratedSchema(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	schema := freshSchema(t, pool)
	_, err := postgres.New(context.Background(), pool, postgres.Config{Schema: schema})
	if !errors.Is(err, postgres.ErrNotMigrated) || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("New on an empty schema: %v; want ErrNotMigrated telling to run Migrate", err)
	}
}

// Several relays start at once, each running Migrate: one applies the migrations,
// the others wait on the advisory lock and find nothing to do.
func TestMigrateConcurrentlyAppliesOnce(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 8, "")
	schema := freshSchema(t, pool)
	cfg := postgres.Config{Schema: schema}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied [][]int
		errs    []error
	)
	for range 6 {
		wg.Go(func() {
			v, err := postgres.Migrate(context.Background(), pool, cfg)
			mu.Lock()
			defer mu.Unlock()
			applied, errs = append(applied, v), append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	var all []int
	for _, v := range applied {
		all = append(all, v...)
	}
	want := make([]int, postgres.SchemaVersion)
	for i := range want {
		want[i] = i + 1
	}
	if slices.Sort(all); !slices.Equal(all, want) {
		t.Fatalf("versions applied across 6 runs: %v, want each of %v once", all, want)
	}
	if again, err := postgres.Migrate(context.Background(), pool, cfg); err != nil || len(again) != 0 {
		t.Fatalf("Migrate on an up-to-date schema = %v, %v; want nothing applied", again, err)
	}
	if _, err := postgres.New(context.Background(), pool, cfg); err != nil {
		t.Fatalf("New after Migrate: %v", err)
	}
}

// Names are quoted, not spliced: a mixed-case schema and table work as written.
func TestSchemaAndTableNamesAreQuoted(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	schema := "Outbox_Quoted_" + randomName("")
	t.Cleanup(func() {
		pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	})
	s := newStore(t, pool, postgres.Config{Schema: schema, Table: "Events"})
	e := outbox.NewEvent("t", "e", "u")
	if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{schema, "Events"}.Sanitize()).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows in %s.Events: %d, %v", schema, n, err)
	}
}

// A table left at version 1 by an older release is upgraded in place: its events stay,
// and the window counts (which read migration 2's index) see them.
func TestMigrateUpgradesVersion1InPlace(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	cfg := postgres.Config{Schema: freshSchema(t, pool), Logger: outboxtest.Discard}
	ctx := context.Background()
	if err := postgres.MigrateTo(ctx, pool, cfg, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.New(ctx, pool, cfg); !errors.Is(err, postgres.ErrNotMigrated) {
		t.Fatalf("New on a version-1 table: %v, want ErrNotMigrated", err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	table := pgx.Identifier{cfg.Schema, "outbox_events"}.Sanitize()
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (id, type, entity_id, status, attempts, created_at, updated_at)
		VALUES (gen_random_uuid(), 't', 'e', 'failed', 5, $1, $1)`, now); err != nil {
		t.Fatal(err)
	}
	applied, err := postgres.Migrate(ctx, pool, cfg)
	if err != nil || !slices.Equal(applied, []int{2, 3, 4}) {
		t.Fatalf("Migrate = %v, %v; want [2 3 4] (paused types, the health window, their statistics)", applied, err)
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats(ctx, outbox.StatsQuery{Now: now.Add(time.Minute), Window: time.Hour})
	if err != nil || st.GivenUp != 1 || st.Recent.GivenUp != 1 {
		t.Fatalf("after the upgrade: %+v, %v; want the given-up event kept and in the window", st, err)
	}
}
