package dashboard_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/sqlite"
)

// Mount the dashboard in a service of your own, under a path of its own, read-only and
// behind a token.
func Example() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "app.db"), sqlite.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := sqlite.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := sqlite.New(ctx, db, sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}

	token := "correct-horse" // in real life: from a secret store
	h, err := dashboard.New(dashboard.Config{
		Store:    store,
		Token:    token,
		ReadOnly: true,
		Prefix:   "/ops/outbox",
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/outbox/", http.StripPrefix("/ops/outbox", h))

	// What an operator's browser (or a script) sees.
	for _, bearer := range []string{"", token} {
		r := httptest.NewRequest(http.MethodGet, "/ops/outbox/api/overview", nil)
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		fmt.Println(w.Code)
	}
	// Output:
	// 401
	// 200
}
