package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/migrate"
)

// Hooks for the package's external tests.

// ClaimConflicts is how many claims ran again after losing a race for an ordering key.
func (s *Store) ClaimConflicts() int64 { return s.claimConflicts.Load() }

// MigrateTo applies the migrations up to version only, as an older release of this
// package would have.
func MigrateTo(ctx context.Context, pool *pgxpool.Pool, cfg Config, version int) error {
	cfg = cfg.withDefaults()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	_, err = migrate.Run(ctx, target{conn: conn.Conn(), cfg: cfg, names: newNames(cfg)}, migrations[:version])
	return err
}

// Watched is how many seqs the store is looking for, and how many looks it took.
func (s *Store) Watched() (seqs, looks int) {
	s.wake.watcher.mu.Lock()
	defer s.wake.watcher.mu.Unlock()
	return len(s.wake.watcher.watched), s.wake.watcher.looks
}

// ListenerPID is the backend PID of the LISTEN connection (0 before the first one).
func (s *Store) ListenerPID() uint32 { return s.wake.listener.pid.Load() }

// Listening reports whether the LISTEN connection is up.
func (s *Store) Listening() bool { return s.wake.listener.connected.Load() }

// Statement returns one of the store's statements by the name of its constant.
func (s *Store) Statement(name string) string {
	q := map[string]string{
		"claimAll": s.q.claim[0][0][0], "claimUser": s.q.claim[1][0][0], "claimType": s.q.claim[0][1][0], "claimTypes": s.q.claim[0][2][0],
		"claimSkipping": s.q.claim[0][0][1], "settleEvents": s.q.settleEvents,
		"extendLease": s.q.extendLease, "listEvents": s.q.listEvents, "listActive": s.q.listActive, "retryEvents": s.q.retryEvents,
		"deleteCompleted": s.q.deleteCompleted, "countActive": s.q.countActive,
		"countCompleted": s.q.countCompleted, "countWaiting": s.q.countWaiting,
		"countBlocked": s.q.countBlocked, "insertEvent": s.q.insertEvent, "getEvent": s.q.getEvent,
		"countStuck": s.q.countStuck, "countRecent": s.q.countRecent,
	}[name]
	if q == "" {
		panic("no statement " + name)
	}
	return q
}

// Explain returns the plan of a statement run with args, executed (ANALYZE) in a
// transaction that is rolled back, so that nothing changes.
func (s *Store) Explain(ctx context.Context, name string, args pgx.NamedArgs, analyze bool) (string, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	opts := "COSTS OFF"
	if analyze {
		opts = "ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON"
	}
	if args["channel"] == nil {
		args["channel"] = s.cfg.Channel
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("EXPLAIN (%s) %s", opts, s.Statement(name)), pgx.QueryExecModeExec, args)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// ClaimStatement returns the claim statement and arguments Claim would run for p.
func (s *Store) ClaimStatement(p outbox.ClaimParams) (string, pgx.NamedArgs, error) {
	return s.claimStatement(p)
}

// ClaimInTx runs one claim statement in tx, which the caller commits or rolls back.
func (s *Store) ClaimInTx(ctx context.Context, tx pgx.Tx, p outbox.ClaimParams) ([]outbox.Event, error) {
	query, args, err := s.claimStatement(p)
	if err != nil || query == "" {
		return nil, err
	}
	return s.claim(ctx, tx, query, args)
}

// NotifierStarted reports whether the store has ever queued a NOTIFY to send after a
// commit.
func (s *Store) NotifierStarted() bool {
	s.wake.notifier.mu.Lock()
	defer s.wake.notifier.mu.Unlock()
	return s.wake.notifier.started
}

// PendingWakeUps returns the user IDs notified since the last fan-out.
func (s *Store) PendingWakeUps() []string { return s.wake.listener.fan.Pending() }

// LookFor runs the watcher's look for seqs once, as the watcher runs it, and returns
// how many of them it found committed.
func (s *Store) LookFor(ctx context.Context, seqs ...int64) (int, error) {
	rows, err := s.wake.watcher.query(ctx, seqs)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}
