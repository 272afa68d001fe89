package sqlite_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		return harness(sqlitetest.NewStore(t))
	}, outboxtest.Parallel())
}

func harness(s *sqlite.Store) outboxtest.Harness {
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
		WithEnqueueHook: func(hook outbox.EnqueueHook) outboxtest.Harness {
			other, err := sqlite.New(context.Background(), s.DB(), sqlite.Config{OnEnqueue: hook, Logger: outboxtest.Discard})
			if err != nil {
				panic(err)
			}
			return harness(other)
		},
		SetMetadataJSON: func(ctx context.Context, id, text string) error {
			_, err := s.DB().ExecContext(ctx, `UPDATE outbox_events SET metadata = ? WHERE id = ?`, text, id)
			return err
		},
	}
}

var _ = sql.ErrNoRows
