package backend_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
)

var quiet = slog.New(slog.DiscardHandler)

const (
	aliceToken = "alice-token-0123456789"
	bobToken   = "bob-token-0123456789ab"
)

// dialects runs fn against a fresh backend database of each kind available: SQLite
// always, PostgreSQL when OUTBOX_POSTGRES_DSN is set (in a schema of its own, dropped after).
func dialects(t *testing.T, fn func(t *testing.T, db *backend.DB)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, openSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, openPostgres(t)) })
}

func openSQLite(t *testing.T) *backend.DB {
	t.Helper()
	return openDB(t, backend.OpenConfig{DSN: filepath.Join(t.TempDir(), "backend.db")})
}

func openPostgres(t *testing.T) *backend.DB {
	t.Helper()
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("OUTBOX_POSTGRES_DSN is not set: skipping the PostgreSQL backend (set it to run against a real server)")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "fitiq_backend_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return openDB(t, backend.OpenConfig{DSN: dsn, Schema: schema})
}

func openDB(t *testing.T, cfg backend.OpenConfig) *backend.DB {
	t.Helper()
	ctx := context.Background()
	db, err := backend.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for user, token := range map[string]string{"alice": aliceToken, "bob": bobToken} {
		if err := db.AddToken(ctx, user, token); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// serve runs the API over real HTTP on a loopback port.
func serve(t *testing.T, db *backend.DB, cfg backend.Config) (*backend.Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s, err := backend.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs.URL
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorMessage() string {
	var eb fitiq.ErrorBody
	_ = json.Unmarshal(a.body, &eb)
	return eb.Error
}

func (a answer) record(t *testing.T) fitiq.RemoteRecord {
	t.Helper()
	var r fitiq.RemoteRecord
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("answer %d %s is not a record: %v", a.status, a.body, err)
	}
	return r
}

func request(t *testing.T, method, url, token string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, data}
}

func weight(id string, version int64, kg float64, at time.Time) *fitiq.ProgressEntry {
	return &fitiq.ProgressEntry{Record: fitiq.Record{ID: id, Version: version}, Type: fitiq.ProgressWeight, Quantity: kg, Date: at.UTC().Truncate(time.Microsecond)}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAPISecurity(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		_, base := serve(t, db, backend.Config{MaxBodyBytes: 4096})
		now := time.Now()
		aliceEntry := weight(uuid.NewString(), 1, 72.5, now)
		aliceURL := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
		if a := request(t, "POST", aliceURL, aliceToken, mustJSON(t, aliceEntry)); a.status != http.StatusCreated {
			t.Fatalf("alice's create: %d %s", a.status, a.body)
		}
		bobURL := base + fitiq.EntityPath("bob", fitiq.KindProgressEntry, "")
		aliceItem := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, aliceEntry.ID)
		bobViewOfAliceItem := base + fitiq.EntityPath("bob", fitiq.KindProgressEntry, aliceEntry.ID)
		valid := mustJSON(t, weight(uuid.NewString(), 1, 80, now))

		cases := []struct {
			name, method, url, token string
			body                     []byte
			want                     int
			wantMsg                  string // part of the error message
		}{
			{"no token", "POST", aliceURL, "", valid, 401, "missing bearer token"},
			{"no token, read", "GET", aliceItem, "", nil, 401, "missing bearer token"},
			{"unknown token", "GET", aliceURL, "not-a-token-of-anyone", nil, 401, "unknown bearer token"},
			{"alice's token on bob's path", "POST", bobURL, aliceToken, valid, 403, "another user"},
			{"bob's token on alice's entry", "GET", aliceItem, bobToken, nil, 403, "another user"},
			{"bob's token on alice's history", "GET", aliceURL, bobToken, nil, 403, "another user"},
			{"bob's token updating alice's entry", "PUT", aliceItem, bobToken, mustJSON(t, weight(aliceEntry.ID, 2, 60, now)), 403, "another user"},
			{"alice's entry ID under bob's own path", "GET", bobViewOfAliceItem, bobToken, nil, 404, "no progress-entries"},
			{"oversized body", "POST", aliceURL, aliceToken, []byte(`{"id":"` + strings.Repeat("x", 5000) + `"}`), 400, "over the limit of 4096 bytes"},
			{"malformed JSON", "POST", aliceURL, aliceToken, []byte(`{"id": "abc", "quantity": 72.5,`), 400, "malformed JSON"},
			{"not JSON at all", "POST", aliceURL, aliceToken, []byte(`weight=72.5`), 400, "malformed JSON"},
			{"empty body", "POST", aliceURL, aliceToken, []byte{}, 400, "empty"},
			{"two objects", "POST", aliceURL, aliceToken, append(valid, valid...), 400, "after the JSON object"},
			{"unknown field", "POST", aliceURL, aliceToken, []byte(`{"id":"` + uuid.NewString() + `","version":1,"type":"weight","quantity":70,"date":"2025-01-31T08:00:00Z","admin":true}`), 400, `unknown field "admin"`},
			{"wrong JSON type", "POST", aliceURL, aliceToken, []byte(`{"id":"` + uuid.NewString() + `","version":1,"type":"weight","quantity":"heavy","date":"2025-01-31T08:00:00Z"}`), 400, "quantity"},
			{"weight out of range", "POST", aliceURL, aliceToken, mustJSON(t, weight(uuid.NewString(), 1, 7250, now)), 400, "quantity: 7250 kg is out of range"},
			{"negative weight", "POST", aliceURL, aliceToken, mustJSON(t, weight(uuid.NewString(), 1, -3, now)), 400, "quantity"},
			{"date in the future", "POST", aliceURL, aliceToken, mustJSON(t, weight(uuid.NewString(), 1, 70, now.AddDate(0, 1, 0))), 400, "date"},
			{"no id", "POST", aliceURL, aliceToken, mustJSON(t, weight("", 1, 70, now)), 400, "id: must not be empty"},
			{"id not a UUID", "POST", aliceURL, aliceToken, mustJSON(t, weight("1; DROP TABLE records", 1, 70, now)), 400, "is not a UUID"},
			{"version 0", "POST", aliceURL, aliceToken, mustJSON(t, weight(uuid.NewString(), 0, 70, now)), 400, "version"},
			{"update with another id in the body", "PUT", aliceItem, aliceToken, mustJSON(t, weight(uuid.NewString(), 2, 70, now)), 400, "is not the path's"},
			{"history limit too large", "GET", aliceURL + "?limit=1000", aliceToken, nil, 400, "limit"},
			{"history from after to", "GET", aliceURL + "?from=2025-02-01&to=2025-01-01", aliceToken, nil, 400, "from"},
			{"history date garbage", "GET", aliceURL + "?from=yesterday", aliceToken, nil, 400, "from"},
			{"unknown kind", "GET", base + "/v1/users/alice/passwords", aliceToken, nil, 404, "unknown kind"},
			{"not JSON content type", "POST", aliceURL, aliceToken, nil, 415, "not application/json"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var a answer
				if c.want == 415 {
					req, _ := http.NewRequest(c.method, c.url, strings.NewReader("<weight/>"))
					req.Header.Set("Authorization", "Bearer "+c.token)
					req.Header.Set("Content-Type", "application/xml")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					a = answer{resp.StatusCode, resp.Header, body}
				} else {
					a = request(t, c.method, c.url, c.token, c.body)
				}
				if a.status != c.want || !strings.Contains(a.errorMessage(), c.wantMsg) {
					t.Fatalf("got %d %q, want %d with a message containing %q", a.status, a.errorMessage(), c.want, c.wantMsg)
				}
				if c.want == 401 && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without a WWW-Authenticate: Bearer header")
				}
				if strings.Contains(string(a.body), "72.5") {
					t.Errorf("a refused request was served alice's data: %s", a.body)
				}
			})
		}

		// Nothing refused was written, and bob sees nothing of alice's.
		ctx := context.Background()
		if c, err := db.Count(ctx, ""); err != nil || c.Records != 1 {
			t.Fatalf("records after the refused requests: %+v, %v; want only alice's one", c, err)
		}
		a := request(t, "GET", bobURL, bobToken, nil)
		var page fitiq.HistoryPage
		if err := json.Unmarshal(a.body, &page); err != nil || a.status != 200 || page.Total != 0 || len(page.Items) != 0 {
			t.Fatalf("bob's history: %d %s; want 200 and empty", a.status, a.body)
		}
		if got, _ := db.Get(ctx, "alice", fitiq.KindProgressEntry, aliceEntry.ID); got.Version != 1 {
			t.Fatalf("alice's entry changed by a refused update: version %d", got.Version)
		}
	})
}

func TestCreateIsIdempotentOnTheClientID(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		s, base := serve(t, db, backend.Config{})
		url := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
		e := weight(uuid.NewString(), 1, 72.5, time.Now())

		first := request(t, "POST", url, aliceToken, mustJSON(t, e))
		second := request(t, "POST", url, aliceToken, mustJSON(t, e))
		if first.status != 201 || second.status != 409 {
			t.Fatalf("create twice: %d then %d, want 201 then 409", first.status, second.status)
		}
		if a, b := first.record(t), second.record(t); a.BackendID == "" || a.BackendID != b.BackendID {
			t.Fatalf("the 409 carries backend ID %q, the create gave %q; want the stored record", b.BackendID, a.BackendID)
		}

		// Racing replays of one create: one row, whatever the interleaving.
		e2 := mustJSON(t, weight(uuid.NewString(), 1, 73, time.Now()))
		var wg sync.WaitGroup
		statuses := make(chan int, 16)
		for range 16 {
			wg.Go(func() { statuses <- request(t, "POST", url, aliceToken, e2).status })
		}
		wg.Wait()
		close(statuses)
		count := map[int]int{}
		for st := range statuses {
			count[st]++
		}
		if count[201] != 1 || count[409] != 15 {
			t.Fatalf("16 concurrent creates of one ID answered %v; want one 201 and fifteen 409", count)
		}
		c, err := db.Count(context.Background(), "alice")
		if err != nil || c.Records != 2 || c.DistinctIDs != 2 {
			t.Fatalf("backend holds %+v (%v); want 2 records with 2 distinct IDs", c, err)
		}
		if st := s.Stats(); st.Created != 2 || st.DuplicateCreates != 16 {
			t.Fatalf("stats %+v; want 2 created and 16 duplicates", st)
		}
	})
}

func TestUpdatesNeverPrecedeTheirCreate(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		s, base := serve(t, db, backend.Config{TooEarlyRetryAfter: 3 * time.Second})
		id := uuid.NewString()
		item := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, id)
		now := time.Now()

		early := request(t, "PUT", item, aliceToken, mustJSON(t, weight(id, 2, 71, now)))
		if early.status != http.StatusTooEarly || early.header.Get("Retry-After") != "3" {
			t.Fatalf("update before create: %d Retry-After %q, want 425 with Retry-After 3", early.status, early.header.Get("Retry-After"))
		}
		if got := request(t, "GET", item, aliceToken, nil); got.status != 404 {
			t.Fatalf("the early update was stored: GET answered %d", got.status)
		}

		create := request(t, "POST", base+fitiq.EntityPath("alice", fitiq.KindProgressEntry, ""), aliceToken, mustJSON(t, weight(id, 1, 72, now)))
		upd := request(t, "PUT", item, aliceToken, mustJSON(t, weight(id, 3, 70, now)))
		replay := request(t, "PUT", item, aliceToken, mustJSON(t, weight(id, 2, 71, now)))
		if create.status != 201 || upd.status != 200 || replay.status != 200 {
			t.Fatalf("create %d, update %d, replayed older update %d; want 201, 200, 200", create.status, upd.status, replay.status)
		}
		got := request(t, "GET", item, aliceToken, nil).record(t)
		e, err := got.Entity()
		if err != nil {
			t.Fatal(err)
		}
		if p := e.(*fitiq.ProgressEntry); got.Version != 3 || p.Quantity != 70 {
			t.Fatalf("stored version %d quantity %g; want version 3 at 70 kg (the older replay must not win)", got.Version, p.Quantity)
		}
		if st := s.Stats(); st.TooEarly != 1 || st.Updated != 1 || st.StaleUpdates != 1 {
			t.Fatalf("stats %+v; want 1 too early, 1 updated, 1 stale", st)
		}
	})
}

func TestHistoryQuery(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		_, base := serve(t, db, backend.Config{})
		url := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
		day0 := time.Date(2025, 1, 1, 8, 0, 0, 0, time.UTC)
		for i := range 30 {
			var e fitiq.Entity = weight(uuid.NewString(), 1, 70+float64(i)/10, day0.AddDate(0, 0, i))
			if i%3 == 0 {
				e = &fitiq.ProgressEntry{Record: fitiq.Record{ID: uuid.NewString(), Version: 1}, Type: fitiq.ProgressSteps, Quantity: 8000, Date: day0.AddDate(0, 0, i)}
			}
			if a := request(t, "POST", url, aliceToken, mustJSON(t, e)); a.status != 201 {
				t.Fatalf("create %d: %d %s", i, a.status, a.body)
			}
		}
		q := fitiq.HistoryQuery{Type: "weight", From: day0.AddDate(0, 0, 5), To: day0.AddDate(0, 0, 24), Page: 2, Limit: 5}
		a := request(t, "GET", url+"?"+q.Values().Encode(), aliceToken, nil)
		var page fitiq.HistoryPage
		if err := json.Unmarshal(a.body, &page); err != nil || a.status != 200 {
			t.Fatalf("history: %d %s", a.status, a.body)
		}
		// Days 5–24 hold 20 entries, of which days 6, 9, …, 24 (7) are steps: 13 weights.
		var days []int
		for _, it := range page.Items {
			days = append(days, int(it.Date.Sub(day0).Hours()/24))
			if it.Type != "weight" {
				t.Errorf("type filter let a %q through", it.Type)
			}
		}
		if page.Total != 13 || !page.HasMore || fmt.Sprint(days) != "[16 14 13 11 10]" {
			t.Fatalf("page 2 of 5: total %d, has_more %v, days %v; want 13, true, [16 14 13 11 10] (most recent first)", page.Total, page.HasMore, days)
		}
	})
}
