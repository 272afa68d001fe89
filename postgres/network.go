package postgres

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultDeadPeerTimeout is how long a connection to a peer that stopped answering
// may live on, by default, before the operating system fails it.
const DefaultDeadPeerTimeout = 10 * time.Second

// ConfigurePool makes cfg's connections notice a dead server within about timeout
// (DefaultDeadPeerTimeout when not positive) instead of the operating system's
// default of many minutes: connections are dialled with DialFunc, connecting is
// bounded by timeout (unless connect_timeout set one), and a connection idle in the
// pool is pinged under that bound before it is handed out. Call it on the pool's
// config before pgxpool.NewWithConfig; the store's LISTEN connection, dialled from
// the same config, gets the same treatment.
//
// What it cannot do is bound a statement that the server is slow to answer: that
// is the deadline of the statement's context (the processor's RoundTripTimeout).
func ConfigurePool(cfg *pgxpool.Config, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultDeadPeerTimeout
	}
	cc := cfg.ConnConfig
	cc.DialFunc = DialFunc(timeout)
	if cc.ConnectTimeout <= 0 {
		cc.ConnectTimeout = timeout
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = timeout
	}
}

// DialFunc returns a pgconn.DialFunc (for pgconn.Config.DialFunc) whose TCP
// connections detect a dead peer within about timeout: keepalive probes start after
// a third of it idle and fail the connection after three unanswered probes, and on
// Linux TCP_USER_TIMEOUT fails it when sent data stays unacknowledged for timeout
// (keepalive alone does not cover a connection with data in flight). A connection
// whose peer is alive but has stopped answering at the application level (a hung
// backend) is not detected by either: statement deadlines cover that.
func DialFunc(timeout time.Duration) pgconn.DialFunc {
	if timeout <= 0 {
		timeout = DefaultDeadPeerTimeout
	}
	probe := max(timeout/3, time.Second)
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: probe, Interval: max(probe/3, time.Second), Count: 3},
		Control: func(network, _ string, c syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil // a Unix socket has no peer to lose
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setUserTimeout(fd, timeout) }); err != nil {
				return err
			}
			return serr
		},
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
}

// abandoned drops the pool's connections after a statement was abandoned at its
// deadline. A connection that went silent rarely goes alone (a failover, a NAT
// timeout, a hung server take all of them), and each idle one would otherwise cost
// a caller another full deadline before it is found out; connections in use are
// closed when they are released, so transactions in flight are not cut. The pool is
// the caller's: New's doc comment and docs/postgres.md say that the store does this.
func (s *Store) abandoned(ctx context.Context, err error) {
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastReset.Load()
	if now-last < int64(time.Second) || !s.lastReset.CompareAndSwap(last, now) {
		return // one reset a second is enough: the connections it dropped are new
	}
	s.log.Warn("statement abandoned at its deadline; replacing the pool's connections", "err", err)
	s.pool.Reset()
}
