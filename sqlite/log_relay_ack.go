package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// The relay's Ack takes SQLite's one write lock. The pool's busy handler (busy_timeout,
// OpenConfig.BusyTimeout) would wait for it by sleeping and retrying on a schedule that
// grows to 100 ms between tries: beside an application writer that commits back to
// back, the relay's tries rarely met the lock free, its commits waited for as long as
// the appends went on, and a wait could outlast the cursor's lease (another relay then
// takes the cursor and delivers the batch again). So the relay takes the lock itself:
// on a connection of its own with busy_timeout 0 for the duration, it tries BEGIN
// IMMEDIATE, and between tries waits a short random time (ackLockRetryMin, doubling to
// ackLockRetryMax), until its lease ends. See docs/log-layout.md, "SQLite: the
// delivery path".
const (
	ackLockRetryMin = 50 * time.Microsecond
	ackLockRetryMax = time.Millisecond
)

// ErrLogAckLockTimeout is returned by a LogRelay's step whose commit could not take the
// database's write lock before the cursor's lease ran out: other writers held it all
// that time. Nothing moved, the cursor stayed, and the batch is delivered again.
var ErrLogAckLockTimeout = errors.New("outbox/sqlite: log relay: the write lock was not free before the cursor's lease ran out")

// ackTx is the Ack's write transaction, on a connection of the relay's own: SQLite
// allows one writer, and the lock is taken with BEGIN IMMEDIATE, so it is begun and
// ended by statements rather than by database/sql's Tx.
type ackTx struct {
	*sql.Conn
	ctx       context.Context
	prior     int64 // the connection's busy_timeout, in ms, restored when it goes back to the pool
	committed bool
}

// beginAck takes the write lock for the Ack, trying until the lease (r.leaseUntil, by
// the relay's Clock) ends; then it fails with ErrLogAckLockTimeout. A lock taken
// before the lease ends is taken while no other relay can hold the cursor, and the
// Ack's UPDATE renews the lease under it, so the commit that follows is in time however
// long its statements take. End the transaction with commit or rollback.
func (r *LogRelay) beginAck(ctx context.Context) (*ackTx, error) {
	conn, err := r.log.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: log relay: begin: %w", err)
	}
	t := &ackTx{Conn: conn, ctx: ctx}
	if err := conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&t.prior); err != nil {
		conn.Close()
		return nil, fmt.Errorf("outbox/sqlite: log relay: begin: read busy_timeout: %w", err)
	}
	started := time.Now()
	defer func() { r.observeAckWait(time.Since(started)) }()
	if r.ackBusyHandler {
		// The wait before ackTx: the pool's busy handler's. For the benchmark's comparison.
		if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			t.close()
			return nil, fmt.Errorf("outbox/sqlite: log relay: begin: %w", err)
		}
		return t, nil
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA busy_timeout = 0`); err != nil {
		t.close()
		return nil, fmt.Errorf("outbox/sqlite: log relay: begin: set busy_timeout: %w", err)
	}
	pause := ackLockRetryMin
	for {
		_, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`)
		if err == nil {
			return t, nil
		}
		if !isBusy(err) {
			t.close()
			return nil, fmt.Errorf("outbox/sqlite: log relay: begin: %w", err)
		}
		if r.ackBusy != nil {
			r.ackBusy()
		}
		left := r.leaseUntil.Sub(r.cfg.Clock.Now())
		if left <= 0 {
			t.close()
			return nil, fmt.Errorf("%w (waited %s); nothing moved, the batch is delivered again",
				ErrLogAckLockTimeout, time.Since(started).Round(time.Millisecond))
		}
		// Random, so that the tries do not fall into step with a writer's rhythm.
		timer := time.NewTimer(min(rand.N(pause)+1, left))
		select {
		case <-ctx.Done():
			timer.Stop()
			t.close()
			return nil, fmt.Errorf("outbox/sqlite: log relay: begin: %w", ctx.Err())
		case <-timer.C:
		}
		pause = min(2*pause, ackLockRetryMax)
	}
}

func (r *LogRelay) observeAckWait(d time.Duration) {
	if r.ackWaited != nil {
		r.ackWaited(d)
	}
}

// commit commits the transaction and gives the connection back. When COMMIT fails,
// the transaction is still open: rollback ends it.
func (t *ackTx) commit() error {
	if _, err := t.ExecContext(t.ctx, `COMMIT`); err != nil {
		return err
	}
	t.committed = true
	t.close()
	return nil
}

// rollback ends the transaction unless it has been committed, and gives the
// connection back to the pool; a no-op after commit.
func (t *ackTx) rollback() {
	if t.Conn != nil {
		t.close()
	}
}

// close rolls back what was not committed, restores the connection's busy_timeout,
// and gives it back to the pool, or has the pool drop it when either fails: a
// connection left in a transaction, or failing every write at once, must not serve
// the application.
func (t *ackTx) close() {
	ctx := context.WithoutCancel(t.ctx)
	var err error
	if !t.committed {
		// Also after a BEGIN that failed: one cut short by ctx may have begun.
		if _, err = t.ExecContext(ctx, `ROLLBACK`); err != nil && strings.Contains(err.Error(), "no transaction is active") {
			err = nil
		}
	}
	if err == nil {
		_, err = t.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, t.prior))
	}
	if err != nil {
		_ = t.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = t.Close()
	t.Conn = nil
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (another connection holds the
// lock), by the driver's result code, or else by SQLite's message for it.
func isBusy(err error) bool {
	if c, ok := resultCode(err); ok {
		return c&0xff == 5 // SQLITE_BUSY and its extended codes
	}
	return strings.Contains(err.Error(), "database is locked")
}
