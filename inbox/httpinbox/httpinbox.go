// Package httpinbox is HTTP middleware that applies each request's effect once per
// Idempotency-Key, the header in which the outbox's httpsink sends the event ID. The
// wrapped handler writes its effect in the transaction that Tx returns; the key is
// recorded in the same transaction, so a request repeated with the same key has no
// second effect.
//
// How a request is answered:
//
//	first time, handler answers 1xx-3xx    effect and key committed, then the handler's response sent
//	first time, handler answers 4xx/5xx    effect and key rolled back, the handler's response sent
//	key already recorded (a replay)        Replay's answer, or ReplayStatus (200) with an empty body; Idempotent-Replayed: true
//	no key                                 400 Bad Request, handler not run
//	message older than the window          410 Gone (inbox.ErrExpired), handler not run
//	database failure, commit failure       503 Service Unavailable, rolled back
//
// The handler's response is held until the commit, so a client never sees a success
// whose effect was then rolled back. httpsink counts 2xx (and 409) as delivered,
// retries 503, and gives an event up on 400 and 410, keeping it for an operator.
package httpinbox

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
)

// Defaults of Config.
const (
	// DefaultHeader is the header httpsink sends the event ID in.
	DefaultHeader = "Idempotency-Key"
	// DefaultReplayStatus answers a replay.
	DefaultReplayStatus = http.StatusOK
)

// ReplayedHeader is set to "true" on the answer to a replay.
const ReplayedHeader = "Idempotent-Replayed"

// Config tunes a Middleware.
type Config struct {
	// Header carries the message ID. Defaults to DefaultHeader.
	Header string
	// ReplayStatus answers a request whose key was already processed: a 2xx, or 409
	// Conflict for clients that want to tell a replay apart. Defaults to
	// DefaultReplayStatus.
	ReplayStatus int
	// Replay, when set, answers a replay instead of ReplayStatus: outside any
	// transaction (Tx returns nil), typically with the resource as it now stands, for
	// clients that need a body. It must not apply the request's effect again.
	Replay http.Handler
	// Logger receives database failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field of c that cannot work.
func (c Config) Validate() error {
	if c.ReplayStatus != 0 && c.ReplayStatus/100 != 2 && c.ReplayStatus != http.StatusConflict {
		return &outbox.FieldError{Field: "httpinbox.Config.ReplayStatus", Problem: fmt.Sprintf("must be a 2xx or 409, got %d", c.ReplayStatus)}
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.Header = http.CanonicalHeaderKey(cmp.Or(c.Header, DefaultHeader))
	c.ReplayStatus = cmp.Or(c.ReplayStatus, DefaultReplayStatus)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Middleware wraps handlers with an inbox.
type Middleware struct {
	ib  *inbox.Inbox
	cfg Config
}

// New returns a Middleware recording keys in ib.
func New(ib *inbox.Inbox, cfg Config) (*Middleware, error) {
	if ib == nil {
		return nil, &outbox.FieldError{Field: "httpinbox.New", Problem: "inbox must not be nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Middleware{ib: ib, cfg: cfg.withDefaults()}, nil
}

type txKey struct{}

// Tx returns the transaction a wrapped handler writes its effect in, or nil outside
// a Middleware. The handler must not commit or roll it back: the middleware does.
func Tx(ctx context.Context) *sql.Tx {
	tx, _ := ctx.Value(txKey{}).(*sql.Tx)
	return tx
}

// rejected carries a handler's 4xx/5xx answer out of the transaction it rolls back.
type rejected struct{ status int }

func (r *rejected) Error() string { return fmt.Sprintf("handler answered %d", r.status) }

// Wrap returns next behind the inbox.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(m.cfg.Header)
		if key == "" {
			http.Error(w, m.cfg.Header+" header is required", http.StatusBadRequest)
			return
		}
		var resp *buffer
		var panicked any
		body := &rewindable{src: r.Body}
		applied, err := m.ib.Process(r.Context(), key, func(tx *sql.Tx) error {
			// Fresh for each run: Process runs fn again when the database aborted the
			// transaction, and the handler must then see the same request.
			resp = newBuffer()
			run := r.WithContext(context.WithValue(r.Context(), txKey{}, tx))
			if r.Body != nil && r.Body != http.NoBody {
				run.Body = body.reader()
			}
			func() {
				defer func() { panicked = recover() }()
				next.ServeHTTP(resp, run)
			}()
			if panicked != nil {
				return fmt.Errorf("handler panicked: %v", panicked)
			}
			if resp.status >= 400 {
				return &rejected{resp.status}
			}
			return nil
		})
		if panicked != nil {
			panic(panicked) // rolled back; now let net/http deal with it as without us
		}
		var rej *rejected
		switch {
		case err == nil && applied, errors.As(err, &rej):
			resp.flush(w)
		case err == nil:
			w.Header().Set(ReplayedHeader, "true")
			if m.cfg.Replay != nil {
				m.cfg.Replay.ServeHTTP(w, r)
				return
			}
			w.WriteHeader(m.cfg.ReplayStatus)
		case errors.Is(err, inbox.ErrExpired):
			http.Error(w, err.Error(), http.StatusGone)
		case errors.Is(err, outbox.ErrInvalid):
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			m.cfg.Logger.Error("inbox: request not processed", "key", key, "err", err)
			http.Error(w, "could not process the request; try again", http.StatusServiceUnavailable)
		}
	})
}

// buffer holds a handler's response until the transaction's outcome is known.
type buffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newBuffer() *buffer { return &buffer{header: http.Header{}} }

func (b *buffer) Header() http.Header { return b.header }

func (b *buffer) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *buffer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *buffer) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(cmp.Or(b.status, http.StatusOK))
	_, _ = w.Write(b.body.Bytes())
}

// rewindable lets each run of the handler read the request body from its start: what
// an earlier run read is kept and read again, the rest still comes from the client.
type rewindable struct {
	src  io.ReadCloser
	seen bytes.Buffer
}

func (b *rewindable) reader() io.ReadCloser {
	// A copy of what was seen so far, since reading on appends to seen.
	prefix := bytes.NewReader(bytes.Clone(b.seen.Bytes()))
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(prefix, io.TeeReader(b.src, &b.seen)), b.src}
}
