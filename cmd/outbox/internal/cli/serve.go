package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
)

// The serve command.
type serveOpts struct {
	addr       string
	token      string
	readOnly   bool
	staleAfter time.Duration
	logLevel   string
	layout     string
	logCursors listFlag
}

var serveCmd = &command{
	name: "serve", args: "[--addr HOST:PORT] [--token TOKEN] [--read-only]", needsDSN: true,
	summary: "Serve the operator's dashboard over HTTP.",
	help: `
The dashboard shows the outbox's counts, health and throughput, lists and filters
events, shows each in full, and retries or discards them after a confirmation.

Off the loopback interface a token is required: pass --token or set
OUTBOX_DASHBOARD_TOKEN, and give it as the password of the browser's login prompt
(any user name; it is logged with each action) or as "Authorization: Bearer TOKEN".
Without a token, serve refuses to start on any other address.

--layout=log (PostgreSQL and SQLite, after 'outbox migrate --layout=log') also shows
what waits on the event log for the log relay, which the events table's counts do not
include: the events and the oldest one's age, with a log_behind alert when it is older
than the oldest_due rule's limit (15m). That is for the relays' default cursor
(relay); with --log-cursor NAME (repeatable, for relays scoped by --type) the cards
show the named cursors' waits summed, and the oldest of them. The health window's
outcomes and the throughput chart also count the events the log's relays delivered,
which leave no row in the events table.

Examples:
  outbox serve --dsn sqlite:./outbox.db                  # http://127.0.0.1:8080/
  OUTBOX_DASHBOARD_TOKEN=… outbox serve --addr :8080 --read-only
  outbox serve --layout=log`,
	flags: func(fs *flag.FlagSet) any {
		o := &serveOpts{}
		fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on")
		fs.StringVar(&o.token, "token", "", "token every request must carry (default $OUTBOX_DASHBOARD_TOKEN)")
		fs.BoolVar(&o.readOnly, "read-only", false, "show, but refuse retries and discards")
		durationVar(fs, &o.staleAfter, "stale-after", outbox.DefaultStaleAfter, "an event due for longer than this is stale")
		fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
		layoutFromStoreFlag(fs, &o.layout)
		logCursorsFlag(fs, &o.logCursors)
		return o
	},
	run: func(ctx context.Context, env *Env, c *call) error {
		o := c.opts.(*serveOpts)
		if err := noArgs(c); err != nil {
			return err
		}
		token := firstNonEmpty(o.token, env.Getenv("OUTBOX_DASHBOARD_TOKEN"))
		if o.staleAfter <= 0 {
			return usagef("--stale-after must be positive, got %s", o.staleAfter)
		}
		if token == "" && !loopbackAddr(o.addr) {
			return usagef("refusing to serve the dashboard on %s without a token: anyone who reaches it could retry and discard events. "+
				"Pass --token (or set OUTBOX_DASHBOARD_TOKEN), or listen on 127.0.0.1", o.addr)
		}
		log, err := newLogger(env.Stderr, o.logLevel)
		if err != nil {
			return err
		}
		o.layout = logImplied(o.layout, len(o.logCursors) > 0)
		cursors, err := checkLogCursors(o.layout, o.logCursors)
		if err != nil {
			return err
		}
		return withStoreAndLog(ctx, c, o.layout, true, func(s outbox.Store, l *eventLog) error {
			cfg := dashboard.Config{
				Store: s, Token: token, ReadOnly: o.readOnly, StaleAfter: o.staleAfter, Clock: env.Clock, Logger: log,
			}
			if l != nil {
				// Each look bounded as the store's reads are (withStore's BoundStore). The
				// dashboard takes one log: the cursors' counts summed, and the oldest.
				cfg.LogWaiting = func(ctx context.Context) (int64, time.Time, error) {
					ctx, cancel := context.WithTimeout(ctx, c.timeout)
					defer cancel()
					return l.waitingSum(ctx, cursors)
				}
				cfg.LogDelivered = func(ctx context.Context, since time.Time) (int64, error) {
					ctx, cancel := context.WithTimeout(ctx, c.timeout)
					defer cancel()
					return l.delivered(ctx, since)
				}
				cfg.LogTimeline = func(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error) {
					ctx, cancel := context.WithTimeout(ctx, c.timeout)
					defer cancel()
					return l.deliveredByMinute(ctx, since, until)
				}
			}
			h, err := dashboard.New(cfg)
			if err != nil {
				return usagef("%v", err)
			}
			ln, err := net.Listen("tcp", o.addr)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			log.Info("serving the dashboard", "url", "http://"+ln.Addr().String()+"/", "read_only", o.readOnly, "token", token != "")
			if env.onListen != nil {
				env.onListen(ln.Addr().String())
			}
			select {
			case err := <-served:
				return fmt.Errorf("serve: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		})
	},
}

// loopbackAddr reports whether addr listens on the loopback interface only: an IP
// that is loopback, or "localhost". An empty host listens everywhere.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
