package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// The client is a real process (this test binary, re-executed as "fitiq sync --watch"),
// killed with SIGKILL while a delivery is in flight: the backend has stored the entry,
// the client never got the answer. After a restart every entry syncs, and the backend
// holds each exactly once: the redelivered create is answered 409 and resolved.
func TestCrashMidSyncLosesNothing(t *testing.T) {
	t.Parallel()
	const (
		user    = "me"
		token   = "crash-test-token-0123456789"
		entries = 200
		crashAt = 25 // the create that is stored but never answered
	)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)

	bdb, err := backend.Open(ctx, backend.OpenConfig{DSN: filepath.Join(t.TempDir(), "backend.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if _, err := bdb.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bdb.AddToken(ctx, user, token); err != nil {
		t.Fatal(err)
	}
	api, err := backend.New(bdb, backend.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	var creates atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && creates.Add(1) == crashAt {
			api.ServeHTTP(httptest.NewRecorder(), r) // stored at the backend…
			close(held)                              // …and the answer held back until the client dies
			<-r.Context().Done()
			return
		}
		api.ServeHTTP(w, r)
	}))
	defer hs.Close()

	// The entries, saved before the client process starts.
	path := filepath.Join(t.TempDir(), "client.db")
	app, closeApp := openApp(t, path, user, nil)
	for i := range entries {
		if _, err := (fitiq.SaveWeightProgressUseCase{App: app}).Execute(ctx, 60+float64(i%300)/10, time.Now().Add(-time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	closeApp()

	// The client process: one delivery at a time, so that the crash point is exact.
	args, _ := json.Marshal([]string{"sync", "--watch", "--db", path, "--user", user, "--api", hs.URL, "--token", token, "--concurrency", "1"})
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "FITIQ_TEST_CHILD=fitiq", "FITIQ_TEST_ARGS="+string(args))
	var childOut bytes.Buffer
	child.Stdout, child.Stderr = &childOut, &childOut
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	select {
	case <-held:
	case err := <-exited:
		t.Fatalf("the client exited (%v) before the crash point:\n%s", err, childOut.String())
	case <-time.After(2 * time.Minute):
		child.Process.Kill()
		t.Fatalf("the client never reached create %d:\n%s", crashAt, childOut.String())
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var exitErr *exec.ExitError
	if err := <-exited; !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the client ended with %v, want killed by SIGKILL", err)
	}

	// The state the crash left: events held under the dead process's lease, one of them
	// already applied at the backend.
	clock := outboxtest.NewClock(time.Now())
	app, closeApp = openApp(t, path, user, clock)
	defer closeApp()
	stuck, err := app.Store().List(ctx, outbox.Filter{Status: outbox.StatusProcessing})
	if err != nil {
		t.Fatal(err)
	}
	appliedButUnrecorded := 0
	for _, e := range stuck {
		if _, err := bdb.Get(ctx, user, fitiq.KindProgressEntry, e.EntityID); err == nil {
			appliedButUnrecorded++
		}
	}
	completed, err := app.Store().List(ctx, outbox.Filter{Status: outbox.StatusCompleted, Limit: entries})
	if err != nil {
		t.Fatal(err)
	}
	// Deliveries of a batch are recorded together when the batch ends: the ones the
	// dead process made in its last batch are at the backend, unrecorded, along with
	// the one it was waiting on.
	if len(stuck) == 0 || appliedButUnrecorded < 1 || appliedButUnrecorded != crashAt-len(completed) {
		t.Fatalf("after the kill: %d events in processing, %d of them at the backend, %d completed; want the %d creates the backend applied beyond the completed ones",
			len(stuck), appliedButUnrecorded, len(completed), crashAt-len(completed))
	}
	if c, _ := bdb.Count(ctx, user); c.Records != crashAt {
		t.Fatalf("backend holds %d entries at the crash, want %d", c.Records, crashAt)
	}

	// Restart: the app opens its database again and syncs. The dead process's leases
	// run out (30s by default); the clock, not the test, waits for them.
	client, err := fitiq.NewClient(fitiq.ClientConfig{BaseURL: hs.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	handlers, err := fitiq.NewHandlers(fitiq.SyncConfig{Local: app.Local(), Client: client, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	p, err := outbox.NewProcessor(app.Store(), handlers, outbox.Config{UserID: user, Clock: clock, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	var st outbox.Stats
	for round := 0; ; round++ {
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err = p.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		if st.Completed == entries || round == 10 {
			break
		}
		clock.Advance(time.Hour) // past any retry delay
	}
	if st.Completed != entries || st.GivenUp != 0 {
		t.Fatalf("after the restart: %+v; want all %d completed", st, entries)
	}

	c, err := bdb.Count(ctx, user)
	if err != nil || c.Records != entries || c.DistinctIDs != entries {
		t.Fatalf("backend holds %+v (%v); want %d entries, each once", c, err, entries)
	}
	counts, err := app.Local().SyncCounts(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if pe := counts[fitiq.KindProgressEntry]; pe.Synced != entries || pe.WithBackendID != entries {
		t.Fatalf("local entries %+v; want all %d synced with a backend ID", pe, entries)
	}
	if d := api.Stats().DuplicateCreates; d != int64(appliedButUnrecorded) {
		t.Fatalf("%d duplicate creates answered 409, want %d: those the crash left unrecorded, redelivered", d, appliedButUnrecorded)
	}
}

func openApp(t *testing.T, path, user string, clock outbox.Clock) (*fitiq.App, func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(path, sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, migrate := range []func(context.Context, *sql.DB) ([]int, error){sqlite.Migrate, fitiq.Migrate} {
		if _, err := migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	app, err := fitiq.NewApp(ctx, store, fitiq.Config{UserID: user, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return app, func() { db.Close() }
}
