package sqlite_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

func TestConformance(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Harness {
		s := sqlitetest.NewStore(t)
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
	}, outboxtest.Parallel())
}

var _ = sql.ErrNoRows
