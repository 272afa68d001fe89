package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/outboxtest"
)

func TestMySQLDSNs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, dsn string
		addr, db  string // want, on success
		user, pw  string
		table     string
		wantErr   string
	}{
		{name: "full", dsn: "mysql://app:s3cret@db.example:3307/shop?table=events", addr: "db.example:3307", db: "shop", user: "app", pw: "s3cret", table: "events"},
		{name: "default port", dsn: "mysql://root@127.0.0.1/test", addr: "127.0.0.1:3306", db: "test", user: "root"},
		{name: "escaped password", dsn: "mysql://app:p%40ss%2Fw@h:3306/d", addr: "h:3306", db: "d", user: "app", pw: "p@ss/w"},
		{name: "no database", dsn: "mysql://root@127.0.0.1:3306/", wantErr: "malformed DSN"},
		{name: "no host", dsn: "mysql:///test", wantErr: "malformed DSN"},
		{name: "bad driver parameter", dsn: "mysql://root@h:3306/d?timeout=soon", wantErr: "malformed DSN"},
		// The Go driver's own form, as OUTBOX_MYSQL_DSN is often written.
		{name: "driver form", dsn: "app:s3cret@tcp(db.example:3307)/shop?table=events", addr: "db.example:3307", db: "shop", user: "app", pw: "s3cret", table: "events"},
		{name: "driver form, no password", dsn: "root@tcp(127.0.0.1:3306)/test", addr: "127.0.0.1:3306", db: "test", user: "root"},
		{name: "driver form, driver parameter", dsn: "root@tcp(h:3306)/d?parseTime=true&table=ev", addr: "h:3306", db: "d", user: "root", table: "ev"},
		{name: "driver form, no database", dsn: "app:s3cret@tcp(127.0.0.1:3306)/", wantErr: "malformed DSN"},
		{name: "driver form, bad parameter", dsn: "app:s3cret@tcp(h:3306)/d?timeout=soon", wantErr: "malformed DSN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseDSN(tc.dsn)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseDSN(%q) = %v, want an error containing %q", tc.dsn, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDSN(%q): %v", tc.dsn, err)
			}
			if d.my == nil || d.my.Addr != tc.addr || d.my.DBName != tc.db || d.my.User != tc.user || d.my.Passwd != tc.pw || d.myCfg.Table != tc.table {
				t.Fatalf("parsed %+v (table %q)", d.my, d.myCfg.Table)
			}
			if !d.my.InterpolateParams {
				t.Fatalf("parameters are not interpolated on the client")
			}
			if strings.Contains(d.describe(), "s3cret") {
				t.Fatalf("describe shows the password: %s", d.describe())
			}
		})
	}
}

// mysqlBackend uses a table of the test's own in the test database, dropped when
// the test ends.
func mysqlBackend(t *testing.T) (string, func(t *testing.T) *mysql.Store) {
	raw := os.Getenv("OUTBOX_MYSQL_DSN")
	if raw == "" {
		t.Skip("OUTBOX_MYSQL_DSN is not set: skipping the CLI against MySQL (e.g. root@tcp(127.0.0.1:3306)/test)")
	}
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		t.Fatal(err)
	}
	table := "outbox_cli_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	u := url.URL{Scheme: "mysql", User: url.UserPassword(cfg.User, cfg.Passwd), Host: cfg.Addr, Path: "/" + cfg.DBName,
		RawQuery: "table=" + table}
	if cfg.Passwd == "" {
		u.User = url.User(cfg.User)
	}
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() {
		if _, err := db.Exec("DROP TABLE IF EXISTS `" + table + "`, `" + table + "_schema_migrations`"); err != nil {
			t.Logf("drop table %s: %v", table, err)
		}
		db.Close()
	})
	return u.String(), func(t *testing.T) *mysql.Store {
		s, err := mysql.New(context.Background(), db, mysql.Config{Table: table, Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
}

// The CLI migrates a MySQL table, reads it, and retries its given-up events.
func TestMySQLMigrateStatsRetry(t *testing.T) {
	t.Parallel()
	dsn, open := mysqlBackend(t)
	if r := runEnv(t, Env{}, "stats", "--dsn", dsn); r.code == 0 || !strings.Contains(r.stderr, "outbox migrate") {
		t.Fatalf("stats before migrate: %v; want a failure that says to migrate", r)
	}
	// A new MySQL outbox is made on the table layout, the one MySQL has.
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn); r.code != 0 || !strings.Contains(r.stdout, "applied migration 1") || strings.Contains(r.stdout, "log") {
		t.Fatalf("migrate: %v", r)
	}
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn); r.code != 0 || !strings.Contains(r.stdout, "is up to date") {
		t.Fatalf("second migrate: %v", r)
	}
	s := open(t)
	ctx := context.Background()
	ok, bad := outbox.NewEvent("order.created", "o-1", "alice"), outbox.NewEvent("order.paid", "o-1", "alice")
	if err := s.Enqueue(ctx, t0, ok, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, outbox.ClaimParams{Owner: "r", Now: t0, LeaseUntil: t0.Add(time.Minute), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx, "r", t0, []outbox.Outcome{
		{ID: ok.ID, Result: outbox.Delivered}, {ID: bad.ID, Result: outbox.Failed, Error: "422"},
	}); err != nil {
		t.Fatal(err)
	}
	env := Env{Clock: outboxtest.NewClock(t0.Add(time.Minute))}
	r := runEnv(t, env, "stats", "--dsn", dsn, "--json")
	var sj statsJSON
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil || r.code != 0 {
		t.Fatalf("stats --json: %v %v", err, r)
	}
	if sj.Total != 2 || sj.Completed != 1 || sj.GivenUp != 1 {
		t.Fatalf("stats --json: %+v", sj)
	}
	if r := runEnv(t, env, "retry", "--dsn", dsn, "--given-up"); r.code != 0 {
		t.Fatalf("retry --given-up: %v", r)
	}
	if e, err := s.Get(ctx, bad.ID); err != nil || e.Status != outbox.StatusPending {
		t.Fatalf("after retry: %+v, %v; want pending", e.Status, err)
	}
}

// `outbox relay` on a mysql:// DSN delivers every event to the sink and serves the
// store's metrics; on its signal it stops cleanly.
func TestMySQLRelayDeliversAndServesMetrics(t *testing.T) {
	t.Parallel()
	dsn, open := mysqlBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn); r.code != 0 {
		t.Fatalf("migrate: %v", r)
	}
	s := open(t)
	var events []*outbox.Event
	for i := range 20 {
		e := outbox.NewEvent("order.created", fmt.Sprintf("o-%d", i), "alice")
		e.OrderingKey = fmt.Sprintf("o-%d", i%3)
		events = append(events, e)
	}
	if err := s.Enqueue(context.Background(), time.Now(), events...); err != nil {
		t.Fatal(err)
	}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	}))
	defer sink.Close()

	obs := newOutcomes(len(events))
	addr := make(chan string, 1)
	env := Env{observer: obs, onListen: func(a string) { addr <- a }}
	d := startRelay(t, env, "--dsn", dsn, "--sink", sink.URL, "--metrics-addr", ":0", "--batch-size", "5")
	metricsAt := <-addr
	waitClosed(t, obs.all, "every event's outcome")
	resp, err := http.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "outbox_claim_duration_seconds") {
		t.Fatalf("metrics without the claim histogram:\n%s", body)
	}
	if r := d.stop(t); r.code != 0 {
		t.Fatalf("relay: %v", r)
	}
	st, err := s.Stats(context.Background(), outbox.StatsQuery{Now: time.Now()})
	if err != nil || st.Completed != len(events) {
		t.Fatalf("stats after the relay: %+v, %v; want all %d completed", st, err, len(events))
	}
	if obs.count[outbox.Delivered] != len(events) {
		t.Fatalf("outcomes %v, want %d delivered", obs.count, len(events))
	}
}

// The driver's own DSN form (user@tcp(host:port)/db), as docs/testing.md writes
// OUTBOX_MYSQL_DSN, works as the store's DSN too.
func TestMySQLDriverFormDSN(t *testing.T) {
	t.Parallel()
	dsn, _ := mysqlBackend(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	raw := os.Getenv("OUTBOX_MYSQL_DSN")
	if strings.HasPrefix(raw, "mysql://") {
		t.Skip("OUTBOX_MYSQL_DSN is in the mysql:// form; this test wants the driver's")
	}
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	driverForm := raw + sep + "table=" + u.Query().Get("table")
	if r := runEnv(t, Env{}, "migrate", "--dsn", driverForm); r.code != 0 || !strings.Contains(r.stdout, "applied migration 1") {
		t.Fatalf("migrate --dsn %s: %v", driverForm, r)
	}
	if r := runEnv(t, Env{}, "stats", "--dsn", dsn); r.code != 0 {
		t.Fatalf("stats on the mysql:// form of the same table: %v", r)
	}
	if r := runEnv(t, Env{}, "health", "--dsn", driverForm); r.code != 0 || !strings.HasPrefix(r.stdout, "healthy") {
		t.Fatalf("health --dsn %s: %v", driverForm, r)
	}
}
