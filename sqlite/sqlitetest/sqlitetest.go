// Package sqlitetest opens throwaway SQLite outboxes for tests, as httptest starts
// throwaway servers.
package sqlitetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// NewStore returns a store on a fresh, migrated database file in t's temporary
// directory, closed when the test ends. It logs nowhere.
func NewStore(t testing.TB) *sqlite.Store { return NewStoreWith(t, sqlite.OpenConfig{}) }

// NewStoreWith is NewStore with the database opened under cfg.
func NewStoreWith(t testing.TB, cfg sqlite.OpenConfig) *sqlite.Store {
	t.Helper()
	return newStore(t, cfg, sqlite.Config{})
}

// NewStoreConfig is NewStore with the store made under cfg (its Logger, when nil,
// logs nowhere), for a test that needs an enqueue hook, say.
func NewStoreConfig(t testing.TB, cfg sqlite.Config) *sqlite.Store {
	t.Helper()
	return newStore(t, sqlite.OpenConfig{}, cfg)
}

func newStore(t testing.TB, open sqlite.OpenConfig, cfg sqlite.Config) *sqlite.Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"), open)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.New(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
