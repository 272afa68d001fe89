package fitiq_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
	"github.com/fitiq/outbox/examples/fitiq/internal/faultproxy"
	"github.com/fitiq/outbox/sqlite"
)

var quiet = slog.New(slog.DiscardHandler)

const (
	user  = "alice"
	token = "alice-token-0123456789"
)

// newApp returns alice's app on a fresh SQLite file with both schemas migrated.
func newApp(t *testing.T, clock outbox.Clock) *fitiq.App {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "client.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := fitiq.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	app, err := fitiq.NewApp(ctx, store, fitiq.Config{UserID: user, Device: "test", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// remote is the backend, reachable over real HTTP, with a log of the requests it answered.
type remote struct {
	server *backend.Server
	url    string

	mu       sync.Mutex
	requests []backend.Request
}

func (r *remote) log() []backend.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]backend.Request(nil), r.requests...)
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	ctx := context.Background()
	db, err := backend.Open(ctx, backend.OpenConfig{DSN: filepath.Join(t.TempDir(), "backend.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.AddToken(ctx, user, token); err != nil {
		t.Fatal(err)
	}
	r := &remote{}
	s, err := backend.New(db, backend.Config{Logger: quiet, Observer: func(req backend.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req)
		r.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	r.server, r.url = s, hs.URL
	return r
}

// newProxy puts a faulty network in front of the remote; with no shares it is perfect
// until told otherwise.
func newProxy(t *testing.T, r *remote, cfg faultproxy.Config) *faultproxy.Proxy {
	t.Helper()
	cfg.Target = r.url
	p, err := faultproxy.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newClient(t *testing.T, url string) *fitiq.Client {
	t.Helper()
	c, err := fitiq.NewClient(fitiq.ClientConfig{BaseURL: url, Token: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newProcessor wires the app's sync handlers to a client of url.
func newProcessor(t *testing.T, app *fitiq.App, url string, cfg outbox.Config) *outbox.Processor {
	t.Helper()
	hs, err := fitiq.NewHandlers(fitiq.SyncConfig{Local: app.Local(), Client: newClient(t, url),
		MaxAttempts: cfg.Retry.MaxAttempts, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cfg.UserID = user
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	p, err := outbox.NewProcessor(app.Store(), hs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) }) // ErrClosed when the test stopped it
	return p
}

// outcomes is an outbox.Observer that reports every delivery attempt on a channel.
type outcomes chan outbox.Outcome

func (outcomes) ObserveClaim(int, time.Duration) {}
func (o outcomes) ObserveDelivery(_ outbox.Event, out outbox.Outcome, _ time.Duration) {
	o <- out
}

// await reads outcomes until done says so. The deadline only keeps a broken build from
// hanging; no assertion depends on timing.
func await(t *testing.T, o outcomes, done func(outbox.Outcome) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case out := <-o:
			if done(out) {
				return
			}
		case <-deadline:
			t.Fatal("the processor did not get there within 60s")
		}
	}
}
