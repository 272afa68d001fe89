package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// TestLogConformance runs the log layout's conformance suite (outboxtest.RunLog) on
// PostgreSQL's log and relay, a schema per subtest.
func TestLogConformance(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	outboxtest.RunLog(t, func(t *testing.T) outboxtest.LogHarness {
		env := newLogRelayEnv(t, pool)
		return outboxtest.LogHarness{
			Store: env.store,
			Append: func(ctx context.Context, events ...*outbox.Event) error {
				return pgx.BeginFunc(ctx, env.pool, func(tx pgx.Tx) error { return env.log.AppendTx(ctx, tx, events...) })
			},
			NewRelay: func(h outbox.Handler, cfg outboxtest.LogRelayConfig) (outboxtest.LogRelay, error) {
				r, err := postgres.NewLogRelay(context.Background(), env.log, env.store, h, postgres.LogRelayConfig{
					Cursor: cfg.Cursor, Types: cfg.Types, MaxConcurrent: cfg.MaxConcurrent, Clock: cfg.Clock,
					Breaker: cfg.Breaker, Observers: cfg.Observers, Logger: outboxtest.Discard,
				})
				if err != nil {
					return nil, err
				}
				return outboxtest.LogRelayOf(r, func(st postgres.LogRelayStep) outboxtest.LogStep {
					return outboxtest.LogStep{Read: st.Read, Delivered: st.Delivered, Failed: st.Failed, Waiting: st.Waiting, Held: st.Held}
				}), nil
			},
			Waiting: env.log.Waiting,
			Peek: func(ctx context.Context, cursor string, limit int) ([]outbox.Event, error) {
				events, err := env.log.Peek(ctx, cursor, limit)
				out := make([]outbox.Event, len(events))
				for i, e := range events {
					out[i] = e.Event
				}
				return out, err
			},
			CopyCursor: env.log.CopyCursor, ErrCursorExists: postgres.ErrLogCursorExists, ErrCursorNotFound: postgres.ErrLogCursorNotFound,
			Delivered:         env.log.Delivered,
			DeliveredByMinute: env.log.DeliveredByMinute,
			Retain: func(ctx context.Context) error {
				_, err := env.log.Retain(ctx)
				return err
			},
			DeliveredRetention: postgres.LogDeliveredRetention,
		}
	}, outboxtest.Parallel())
}

// The relays are metrics.LogSources.
var _ metrics.LogSource = (*postgres.LogRelay)(nil)
