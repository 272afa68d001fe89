package dashboard_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// storeKind makes a fresh, migrated, empty store for one test.
type storeKind struct {
	name string
	new  func(t *testing.T) outbox.Store
}

// eachStore runs fn on SQLite, and on PostgreSQL when OUTBOX_POSTGRES_DSN is set.
func eachStore(t *testing.T, fn func(t *testing.T, newStore func(t *testing.T) outbox.Store)) {
	kinds := []storeKind{{"sqlite", func(t *testing.T) outbox.Store { return sqlitetest.NewStore(t) }}, {"postgres", newPostgresStore}}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			fn(t, k.new)
		})
	}
}

// newPostgresStore is a store on a schema of the test's own, dropped when it ends.
func newPostgresStore(t *testing.T) outbox.Store {
	t.Helper()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("set OUTBOX_POSTGRES_DSN to run the dashboard's tests on PostgreSQL too")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 3
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "outbox_dash_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		pool.Close()
	})
	pcfg := postgres.Config{Schema: schema, DisableListen: true, Logger: outboxtest.Discard}
	if _, err := postgres.Migrate(context.Background(), pool, pcfg); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.New(context.Background(), pool, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
