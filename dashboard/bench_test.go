package dashboard_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
)

// benchRows is the size of the benchmark's outbox.
const benchRows = 1_000_000

// fillMillion writes benchRows events into table in one statement, as retention leaves
// an outbox: the oldest 97% completed, one every 10 ms up to now; in the newest 3%, a
// quarter each given up (each the head of a key), pending behind one of those
// (blocked), retrying, and pending or in flight (some under an expired lease).
func fillMillion(tb testing.TB, pool *pgxpool.Pool, table string, now time.Time) {
	tb.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO `+table+` (id, type, entity_id, user_id, status, attempts, priority, ordering_key, payload,
    created_at, updated_at, last_attempt_at, next_attempt_at, completed_at, last_error, lease_owner, lease_expires_at)
SELECT gen_random_uuid(), (ARRAY['order.created','order.shipped','payment.charge','user.renamed','stock.moved'])[1 + i % 5],
       'entity-' || i, 'user-' || (i % 1000),
       CASE WHEN done THEN 'completed' WHEN i % 4 = 3 OR i % 4 = 1 THEN 'failed'
            WHEN i % 40 = 2 THEN 'processing' ELSE 'pending' END,
       CASE WHEN done OR i % 4 IN (1, 3) OR i % 40 = 2 THEN 1 ELSE 0 END,
       0,
       CASE WHEN done THEN NULL WHEN i % 4 = 3 THEN 'key-' || i WHEN i % 4 = 0 THEN 'key-' || (i - 1) END,
       '{"kind":"weight","quantity":72.5}',
       created, CASE WHEN done THEN created + interval '1 second' WHEN i % 4 IN (1, 3) THEN failed_at ELSE created END,
       CASE WHEN done OR i % 4 IN (1, 3) OR i % 40 = 2 THEN created END,
       CASE WHEN done THEN NULL WHEN i % 4 = 3 THEN NULL WHEN i % 4 = 1 THEN $1::timestamptz + interval '5 minutes' ELSE created END,
       CASE WHEN done THEN created + interval '1 second' END,
       CASE WHEN NOT done AND i % 4 IN (1, 3) THEN '503 Service Unavailable' END,
       CASE WHEN NOT done AND i % 40 = 2 THEN 'relay-1' END,
       CASE WHEN NOT done AND i % 40 = 2 THEN $1::timestamptz + (CASE WHEN i % 80 = 2 THEN -1 ELSE 1 END) * interval '1 minute' END
FROM (SELECT i, i <= $2::int * 97 / 100 AS done,
             $1::timestamptz - ($2::int - i) * interval '10 milliseconds' AS created,
             $1::timestamptz - ((($2::int - i) * 7) % 3600) * interval '1 second' AS failed_at
      FROM generate_series(1, $2::int) AS i) AS g`, now, benchRows)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `VACUUM ANALYZE `+table); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPagesPostgres serves every page of the dashboard from a PostgreSQL outbox
// of a million events. It needs OUTBOX_POSTGRES_DSN; filling the table takes a while,
// so run it alone: go test -run ^$ -bench PagesPostgres -benchtime 20x ./dashboard/
func BenchmarkPagesPostgres(b *testing.B) {
	dsn := os.Getenv("OUTBOX_POSTGRES_DSN")
	if dsn == "" {
		b.Skip("set OUTBOX_POSTGRES_DSN to benchmark the dashboard on PostgreSQL")
	}
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	pcfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	schema := "outbox_dash_bench_" + hex.EncodeToString(suffix[:])
	defer pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	cfg := postgres.Config{Schema: schema, DisableListen: true, Logger: outboxtest.Discard}
	if _, err := postgres.Migrate(ctx, pool, cfg); err != nil {
		b.Fatal(err)
	}
	store, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	start := time.Now()
	fillMillion(b, pool, pgx.Identifier{schema, "outbox_events"}.Sanitize(), now)
	b.Logf("filled %d events in %s", benchRows, time.Since(start).Round(time.Millisecond))

	// The refresh interval of the default; the overview's figures are then computed at
	// most once per interval for all requests (see overview-cold for what that costs).
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: outboxtest.NewClock(now), Logger: outboxtest.Discard})
	if err != nil {
		b.Fatal(err)
	}
	// Events to show: one completed from the middle of the table, a blocked one, its
	// given-up head, and a cursor deep into the completed ones.
	pick := func(f outbox.Filter) outbox.Event {
		f.Limit = 1
		events, err := store.List(ctx, f)
		if err != nil || len(events) == 0 {
			b.Fatalf("pick %+v: %v", f, err)
		}
		return events[0]
	}
	middle := pick(outbox.Filter{AfterSeq: benchRows / 2})
	head := pick(outbox.Filter{GivenUp: true})
	blocked := pick(outbox.Filter{Status: outbox.StatusPending, AfterSeq: head.Seq})
	csrf := formToken(b, h, "/events/"+head.ID)

	pages := []struct {
		name, method, path string
		form               url.Values
	}{
		{"overview", "GET", "/", nil},
		{"overview-live", "GET", "/overview/live", nil},
		{"api-overview", "GET", "/api/overview", nil},
		{"events", "GET", "/events", nil},
		{"events-deep-page", "GET", "/events?before=" + itoa(middle.Seq), nil},
		{"events-deep-page-oldest-first", "GET", "/events?order=oldest&after=" + itoa(middle.Seq), nil},
		{"events-completed-of-type", "GET", "/events?status=completed&type=stock.moved&before=" + itoa(middle.Seq), nil},
		{"events-retrying", "GET", "/events?retrying=1", nil},
		{"events-given-up", "GET", "/events?given_up=1", nil},
		{"events-failed-of-user", "GET", "/events?status=failed&user=user-7", nil},
		{"events-stale", "GET", "/events?stale=1", nil},
		{"events-stuck", "GET", "/events?stuck=1", nil},
		{"events-time-range", "GET", "/events?" + url.Values{"from": {now.Add(-90 * time.Minute).Format("2006-01-02T15:04")}, "to": {now.Add(-80 * time.Minute).Format("2006-01-02T15:04")}}.Encode(), nil},
		{"events-id-search", "GET", "/events?q=" + middle.ID, nil},
		{"event-detail", "GET", "/events/" + middle.ID, nil},
		{"event-detail-blocked", "GET", "/events/" + blocked.ID, nil},
		{"confirm-retry-given-up", "POST", "/actions/retry", url.Values{"csrf": {csrf}, "query": {"given_up=1"}}},
	}
	// The overview computed afresh (a new dashboard each time: nothing cached), as the
	// first request after a start or an action, and each background refresh, costs.
	b.Run("overview-cold", func(b *testing.B) {
		for b.Loop() {
			cold, err := dashboard.New(dashboard.Config{Store: store, Clock: outboxtest.NewClock(now), Logger: outboxtest.Discard})
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1:8080"
			w := httptest.NewRecorder()
			cold.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("GET / = %d", w.Code)
			}
		}
	})
	// The overview's store calls, apart: where its time goes.
	queries := []struct {
		name string
		run  func() error
	}{
		{"store-stats", func() error {
			_, err := store.Stats(ctx, outbox.StatsQuery{Now: now, StaleAfter: outbox.DefaultStaleAfter})
			return err
		}},
		{"store-timeline", func() error {
			_, err := store.Timeline(ctx, outbox.TimelineQuery{Since: now.Add(-time.Hour), Until: now})
			return err
		}},
		{"store-timeline-refresh", func() error { // as each refresh asks, with the past minutes' completions kept
			_, err := store.Timeline(ctx, outbox.TimelineQuery{Since: now.Add(-time.Hour), Until: now, CompletedSince: now.Add(-3 * time.Minute)})
			return err
		}},
		{"store-list-processing", func() error {
			_, err := store.List(ctx, outbox.Filter{Status: outbox.StatusProcessing, Limit: 1000})
			return err
		}},
	}
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if err := q.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	getPage(b, h, "/") // the overview's figures, computed once as the first viewer would
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				var body *strings.Reader
				if p.form != nil {
					body = strings.NewReader(p.form.Encode())
				} else {
					body = strings.NewReader("")
				}
				r := httptest.NewRequest(p.method, p.path, body)
				r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1:8080"
				if p.form != nil {
					r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("%s %s = %d: %.300s", p.method, p.path, w.Code, w.Body)
				}
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// getPage serves path from h to a loopback client and returns the body.
func getPage(tb testing.TB, h http.Handler, path string) string {
	tb.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1:8080"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		tb.Fatalf("GET %s = %d", path, w.Code)
	}
	return w.Body.String()
}

// formToken reads the form token from a page of h.
func formToken(tb testing.TB, h http.Handler, path string) string {
	tb.Helper()
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(getPage(tb, h, path))
	if m == nil {
		tb.Fatalf("no form token on %s", path)
	}
	return m[1]
}
