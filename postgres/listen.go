package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox/internal/debounce"
	"github.com/fitiq/outbox/internal/hub"
)

// firstReconnectDelay is the wait before the first attempt to re-establish a lost
// LISTEN connection; it doubles up to Config.ReconnectMaxDelay.
const firstReconnectDelay = 100 * time.Millisecond

// listener is the inbound half of wake-ups (see wakeups): it holds the store's one
// LISTEN connection and fans what arrives out to this process's subscribers, at most
// once per NotifyDebounce. It starts with the first subscription.
type listener struct {
	connConfig   *pgx.ConnConfig
	listenSQL    string
	maxReconnect time.Duration
	checkAfter   time.Duration // quiet time before the connection is pinged, and the ping's bound
	log          *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	fan    *debounce.Batcher // user IDs notified since the last fan-out

	// connected is true while LISTEN is in effect; while it is not, the store wakes its
	// own subscribers after its own commits (see wakeups.announce).
	connected atomic.Bool
	pid       atomic.Uint32 // backend of the LISTEN connection, for tests

	subs hub.Hub // this process's subscribers

	mu      sync.Mutex
	started bool
	closed  bool
}

func newListener(connConfig *pgx.ConnConfig, cfg Config, log *slog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		connConfig:   connConfig,
		listenSQL:    "LISTEN " + newNames(cfg).Listen,
		maxReconnect: cfg.ReconnectMaxDelay,
		checkAfter:   cfg.ListenCheckInterval,
		log:          log,
		ctx:          ctx, cancel: cancel,
	}
	// A burst of commits costs one wake-up per processor per NotifyDebounce, not one
	// per commit.
	l.fan = debounce.New(cfg.NotifyDebounce, l.subs.Wake)
	return l
}

func (l *listener) subscribe(userID string, listen bool) (<-chan struct{}, func()) {
	wake, unsubscribe := l.subs.Subscribe(userID)
	l.mu.Lock()
	start := listen && !l.started && !l.closed
	l.started = l.started || start
	l.mu.Unlock()
	if start {
		l.wg.Go(l.run)
		l.wg.Go(func() { l.fan.Run(l.ctx) })
	}
	return wake, unsubscribe
}

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
}

// run keeps a LISTEN connection up until the store is closed, reconnecting with
// backoff when it drops. Processors poll meanwhile, and every subscriber is woken
// once the connection is back, for whatever was committed while it was down.
func (l *listener) run() {
	delay := firstReconnectDelay
	var timer *time.Timer
	for {
		listened, err := l.session()
		if l.ctx.Err() != nil {
			return
		}
		if listened {
			delay = firstReconnectDelay
			l.log.Warn("LISTEN connection lost; processors poll until it is back", "err", err)
		} else {
			l.log.Warn("LISTEN connection failed; retrying", "err", err, "retry_in", delay)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-l.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if !listened {
			delay = min(2*delay, l.maxReconnect)
		}
	}
}

// session connects, listens, and relays notifications until the connection fails or
// the store closes. It reports whether LISTEN took effect.
func (l *listener) session() (bool, error) {
	// A connection of its own, outside the pool: it is held for as long as the store
	// lives and must not count against the pool's MaxConns.
	conn, err := pgx.ConnectConfig(l.ctx, l.connConfig)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(l.ctx, l.listenSQL); err != nil {
		return false, err
	}
	l.pid.Store(conn.PgConn().PID())
	l.connected.Store(true)
	defer l.connected.Store(false)
	l.log.Debug("listening for notifications")
	l.fan.AddAll() // catch up with commits made while nobody listened
	for {
		// A LISTEN connection only ever reads, so a peer gone silent would go unnoticed
		// for as long as the silence lasts: after a quiet spell, it must answer a ping.
		wctx, cancel := context.WithTimeout(l.ctx, l.checkAfter)
		n, err := conn.WaitForNotification(wctx)
		quiet := errors.Is(wctx.Err(), context.DeadlineExceeded)
		cancel()
		if err == nil {
			l.fan.Add(n.Payload)
			continue
		}
		if !quiet || l.ctx.Err() != nil {
			return true, err
		}
		pctx, cancel := context.WithTimeout(l.ctx, l.checkAfter)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return true, fmt.Errorf("LISTEN connection did not answer a ping within %s: %w", l.checkAfter, err)
		}
	}
}
