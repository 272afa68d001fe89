package httpinbox_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/httpinbox"
	"github.com/fitiq/outbox/sqlite"
)

// A handler behind the middleware writes its effect in httpinbox.Tx; a request
// repeated with the same Idempotency-Key (as httpsink sends after a lost answer) is
// answered without running it again.
func ExampleMiddleware_Wrap() {
	dir, _ := os.MkdirTemp("", "httpinbox-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "receiver.db"), sqlite.OpenConfig{})
	defer db.Close()
	ctx := context.Background()
	db.Exec(`CREATE TABLE payments (event_id TEXT NOT NULL)`)
	cfg := inbox.Config{Dialect: inbox.SQLite}
	inbox.Migrate(ctx, db, cfg)
	ib, _ := inbox.New(ctx, db, cfg)
	mw, _ := httpinbox.New(ib, httpinbox.Config{})

	srv := httptest.NewServer(mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx := httpinbox.Tx(r.Context())
		if _, err := tx.ExecContext(r.Context(), `INSERT INTO payments (event_id) VALUES (?)`, r.Header.Get("Idempotency-Key")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})))
	defer srv.Close()

	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		req.Header.Set("Idempotency-Key", "payment-7")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode, "replayed:", resp.Header.Get(httpinbox.ReplayedHeader) == "true")
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM payments`).Scan(&n)
	fmt.Println("payments:", n)
	// Output:
	// 201 replayed: false
	// 200 replayed: true
	// payments: 1
}
