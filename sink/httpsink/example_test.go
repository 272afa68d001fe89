package httpsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sqlite"
)

// The sink POSTs each event's JSON envelope, with the event ID as Idempotency-Key; a
// 2xx (or a 409: the receiver already has it) completes the event.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)

	// The receiver: any HTTP API that deduplicates on Idempotency-Key.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env sink.Envelope
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Printf("received %s %s, attempt %d, key matches ID: %v\n",
			env.Type, env.EntityID, env.Attempt, r.Header.Get("Idempotency-Key") == env.ID)
		w.WriteHeader(http.StatusCreated)
	}))
	defer receiver.Close()

	dir, err := os.MkdirTemp("", "outbox-httpsink-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	e := outbox.NewEvent("order.created", "order-1", "user-1")
	e.Payload = json.RawMessage(`{"total": 42.5}`)
	if err := store.Enqueue(ctx, time.Now(), e); err != nil {
		log.Fatal(err)
	}

	s, err := httpsink.New(httpsink.Config{URL: receiver.URL, BearerToken: os.Getenv("SINK_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, s, outbox.Config{Logger: quiet}) // the sink is the handler
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// received order.created order-1, attempt 1, key matches ID: true
}
