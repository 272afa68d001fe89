package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// dsn returns the test database's address, or skips t when none is configured.
func dsn(t testing.TB) string {
	t.Helper()
	v := os.Getenv("OUTBOX_POSTGRES_DSN")
	if v == "" {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping a PostgreSQL test (.ci/run sets it, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return v
}

// newPool opens a pool on the test database, closed when t ends. The database is
// shared with other developers' tests: keep pools small.
func newPool(t testing.TB, maxConns int32, appName string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	if appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var (
	sharedOnce sync.Once
	shared     *pgxpool.Pool
	sharedErr  error
)

// sharedPool is one pool for the many short tests of the package.
func sharedPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := dsn(t)
	sharedOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			sharedErr = err
			return
		}
		cfg.MaxConns = 8
		shared, sharedErr = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// freshSchema returns the name of a schema no one else uses, dropped with everything
// in it when t ends. Migrate creates it.
func freshSchema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	schema := randomName("outbox_test_")
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newStore returns a Store on a fresh, migrated schema of pool (the shared one when nil).
func newStore(t testing.TB, pool *pgxpool.Pool, cfg postgres.Config) *postgres.Store {
	t.Helper()
	if pool == nil {
		pool = sharedPool(t)
	}
	if cfg.Schema == "" {
		cfg.Schema = freshSchema(t, pool)
	}
	if cfg.Logger == nil {
		cfg.Logger = outboxtest.Discard
	}
	ctx := context.Background()
	if _, err := postgres.Migrate(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(t, newStore(t, nil, postgres.Config{}))
	}, outboxtest.Parallel())
}

func harness(t *testing.T, s *postgres.Store) outboxtest.Harness {
	return outboxtest.Harness{
		Store: s,
		EnqueueInTx: func(ctx context.Context, commit bool, events ...*outbox.Event) error {
			tx, err := s.Pool().Begin(ctx)
			if err != nil {
				return err
			}
			if err := s.EnqueueTx(ctx, tx, events...); err != nil {
				tx.Rollback(ctx)
				return err
			}
			if commit {
				return tx.Commit(ctx)
			}
			return tx.Rollback(ctx)
		},
		WithEnqueueHook: func(hook outbox.EnqueueHook) outboxtest.Harness {
			cfg := s.Config()
			cfg.OnEnqueue = hook
			other, err := postgres.New(context.Background(), s.Pool(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(other.Close)
			return harness(t, other)
		},
		SetMetadataJSON: func(ctx context.Context, id, text string) error {
			cfg := s.Config()
			table := pgx.Identifier{cfg.Schema, cfg.Table}.Sanitize()
			_, err := s.Pool().Exec(ctx, `UPDATE `+table+` SET metadata = CAST($1 AS jsonb) WHERE id = CAST($2 AS uuid)`, text, id)
			return err
		},
	}
}

var _ = fmt.Sprintf
