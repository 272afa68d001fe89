package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// newStore opens a fresh, migrated database file in t's temporary directory.
func newStore(t testing.TB) *sqlite.Store { return newStoreWith(t, sqlite.OpenConfig{}) }

func newStoreWith(t testing.TB, cfg sqlite.OpenConfig) *sqlite.Store {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.New(context.Background(), db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		s := newStore(t)
		return outboxtest.Harness{
			Store: s,
			EnqueueInTx: func(ctx context.Context, commit bool, events ...*outbox.Event) error {
				tx, err := s.DB().BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				if err := s.EnqueueTx(ctx, tx, events...); err != nil {
					tx.Rollback()
					return err
				}
				if commit {
					return tx.Commit()
				}
				return tx.Rollback()
			},
		}
	})
}

var _ = sql.ErrNoRows
