package sqlite_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// TestLogConformance runs the log layout's conformance suite (outboxtest.RunLog) on
// SQLite's log and relay, a database file per subtest.
func TestLogConformance(t *testing.T) {
	t.Parallel()
	outboxtest.RunLog(t, func(t *testing.T) outboxtest.LogHarness {
		env := newRelayEnv(t)
		return outboxtest.LogHarness{
			Store: env.store,
			Append: func(ctx context.Context, events ...*outbox.Event) error {
				return env.log.Transact(ctx, func(tx *sql.Tx) error { return env.log.AppendTx(ctx, tx, events...) })
			},
			NewRelay: func(h outbox.Handler, cfg outboxtest.LogRelayConfig) (outboxtest.LogRelay, error) {
				r, err := sqlite.NewLogRelay(context.Background(), env.log, env.store, h, sqlite.LogRelayConfig{
					Cursor: cfg.Cursor, Types: cfg.Types, MaxConcurrent: cfg.MaxConcurrent, Clock: cfg.Clock,
					Breaker: cfg.Breaker, Observers: cfg.Observers, Logger: outboxtest.Discard,
				})
				if err != nil {
					return nil, err
				}
				return outboxtest.LogRelayOf(r, func(st sqlite.LogRelayStep) outboxtest.LogStep {
					return outboxtest.LogStep{Read: st.Read, Delivered: st.Delivered, Failed: st.Failed, Waiting: st.Waiting, Held: st.Held}
				}), nil
			},
			Waiting:    env.log.Waiting,
			Peek:       env.log.Peek,
			CopyCursor: env.log.CopyCursor, ErrCursorExists: sqlite.ErrLogCursorExists, ErrCursorNotFound: sqlite.ErrLogCursorNotFound,
			Delivered:         env.log.Delivered,
			DeliveredByMinute: env.log.DeliveredByMinute,
			Retain: func(ctx context.Context) error {
				_, err := env.log.Trim(ctx, 1000)
				return err
			},
			DeliveredRetention: sqlite.LogDeliveredRetention,
		}
	}, outboxtest.Parallel())
}

// The relays are metrics.LogSources.
var _ metrics.LogSource = (*sqlite.LogRelay)(nil)
