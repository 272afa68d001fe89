package fitiq_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
	"github.com/fitiq/outbox/sqlite"
)

// The seed's flow: a weight saved with its event in one transaction, delivered by the
// processor to the remote API, and found in the remote history.
func ExampleSaveWeightProgressUseCase() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "fitiq-example-")
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.DiscardHandler)

	// The remote API, with its own database and a token for user "alice".
	bdb, _ := backend.Open(ctx, backend.OpenConfig{DSN: filepath.Join(dir, "backend.db")})
	defer bdb.Close()
	bdb.Migrate(ctx)
	bdb.AddToken(ctx, "alice", "alice-token-0123456789")
	api, _ := backend.New(bdb, backend.Config{Logger: quiet})
	server := httptest.NewServer(api)
	defer server.Close()

	// The app: its tables and the outbox in one SQLite file.
	db, _ := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	defer db.Close()
	sqlite.Migrate(ctx, db)
	fitiq.Migrate(ctx, db)
	store, _ := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	app, _ := fitiq.NewApp(ctx, store, fitiq.Config{UserID: "alice"})

	id, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 72.5, time.Now())
	if err != nil {
		fmt.Println(err)
		return
	}
	pending, _ := store.List(ctx, outbox.Filter{Status: outbox.StatusPending})
	fmt.Println("pending events:", len(pending), pending[0].Type, pending[0].EntityID == id)

	client, _ := fitiq.NewClient(fitiq.ClientConfig{BaseURL: server.URL, Token: "alice-token-0123456789"})
	handlers, _ := fitiq.NewHandlers(fitiq.SyncConfig{Local: app.Local(), Client: client, Logger: quiet})
	processor, _ := outbox.NewProcessor(store, handlers, outbox.Config{UserID: "alice", Logger: quiet})
	processor.Drain(ctx)

	event, _ := store.Get(ctx, pending[0].ID)
	fmt.Println("event:", event.Status)
	entry, _ := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
	fmt.Println("local entry:", entry.Base().SyncStatus, entry.Base().BackendID != "")
	page, _ := client.History(ctx, "alice", fitiq.KindProgressEntry, fitiq.HistoryQuery{Type: "weight", Limit: 10})
	remote, _ := page.Items[0].Entity()
	fmt.Println("remote history:", remote.(*fitiq.ProgressEntry).Quantity, "kg")
	// Output:
	// pending events: 1 progressEntry true
	// event: completed
	// local entry: synced true
	// remote history: 72.5 kg
}
