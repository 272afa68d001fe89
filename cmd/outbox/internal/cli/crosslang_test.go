package cli

// Events written from other languages (issue 26): the SQL contract of
// docs/any-language.md, read from the page and run against each store's schema; the
// statements run by real clients (sqlite3, psql, the mariadb client, Python's
// psycopg2) in a transaction with a business row, then delivered by `outbox relay
// --once`; and what the relay does with the rows that break the contract.
//
// PostgreSQL and MySQL come from OUTBOX_POSTGRES_DSN and OUTBOX_MYSQL_DSN, and the
// clients from PATH. Locally a test without them skips, saying why; with CI set it
// fails instead, so that .ci/run cannot pass without them.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/postgres"
	outboxsink "github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sqlite"
)

// contractPage is the page that documents the SQL contract.
var contractPage = filepath.Join(docsDir, "any-language.md")

// contractBlocks returns the fenced blocks of the page marked "<!-- contract 1: NAME -->",
// by name.
func contractBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(contractPage)
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!-- contract 1: ([a-z0-9 ]+) -->$`)
	lines := strings.Split(string(b), "\n")
	blocks := map[string]string{}
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s:%d: the marker %q is not followed by a fenced block", contractPage, i+1, m[1])
		}
		j := i + 2
		for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
			j++
		}
		blocks[m[1]] = strings.Join(lines[i+2:j], "\n")
		i = j
	}
	for _, name := range []string{"sqlite full", "sqlite minimal", "sqlite uuid", "postgres full", "postgres minimal",
		"postgres notify", "mysql full", "mysql minimal", "psql transaction", "psycopg2",
		"sqlite log full", "sqlite log minimal", "postgres log full", "postgres log minimal"} {
		if blocks[name] == "" {
			t.Fatalf("%s has no block marked <!-- contract 1: %s -->", contractPage, name)
		}
	}
	return blocks
}

// need returns the value of a service variable. Without it the test skips, unless CI
// is set: then it fails.
func need(t *testing.T, variable string) string {
	t.Helper()
	v := os.Getenv(variable)
	if v == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set, and CI is: .ci/run sets it", variable)
		}
		t.Skipf("%s is not set: skipping (CI runs it)", variable)
	}
	return v
}

// needTool returns the path of the first of names found on PATH. Without any the test
// skips, unless CI is set: then it fails (.ci/run installs them).
func needTool(t *testing.T, pkg string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run installs it (Debian package %s)", strings.Join(names, " or "), pkg)
	}
	t.Skipf("%s is not installed: skipping (apt-get install %s; CI runs it)", strings.Join(names, " or "), pkg)
	return ""
}

// sqlStore is a freshly migrated outbox of one store, the test's own: a SQLite file, a
// PostgreSQL schema or a MySQL database, with the default table name, so that the
// page's statements run as written.
type sqlStore struct {
	kind  string  // sqlite, postgres, mysql
	dsn   string  // for the outbox command
	db    *sql.DB // for the test's own statements (PostgreSQL: search_path is the schema)
	store outbox.Store
	// bind rewrites a statement's :name parameters for db's driver.
	bind func(stmt string, v map[string]any) (string, []any)

	path            string          // sqlite: the file
	pgURL, pgSchema string          // postgres: the server and the schema
	my              *gomysql.Config // mysql: the database
}

var storeKinds = []string{"sqlite", "postgres", "mysql"}

func newSQLStore(t *testing.T, kind string) *sqlStore {
	t.Helper()
	ctx := context.Background()
	suffix := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	s := &sqlStore{kind: kind}
	switch kind {
	case "sqlite":
		s.path = filepath.Join(t.TempDir(), "app.db")
		s.dsn = "sqlite:" + s.path
		mustMigrate(t, s.dsn)
		db, err := sqlite.Open(s.path, sqlite.OpenConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		st, err := sqlite.New(ctx, db, sqlite.Config{Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		s.db, s.store, s.bind = db, st, bindNamed
	case "postgres":
		base := need(t, "OUTBOX_POSTGRES_DSN")
		s.pgURL, s.pgSchema = base, "outbox_xl_"+suffix
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatalf("connect to %s: %v", base, err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+s.pgSchema+" CASCADE"); err != nil {
				t.Logf("drop schema %s: %v", s.pgSchema, err)
			}
			admin.Close(context.Background())
		})
		sep := "?"
		if strings.Contains(base, "?") {
			sep = "&"
		}
		s.dsn = base + sep + "schema=" + s.pgSchema
		mustMigrate(t, s.dsn)
		cc, err := pgx.ParseConfig(base)
		if err != nil {
			t.Fatal(err)
		}
		cc.RuntimeParams["search_path"] = s.pgSchema
		s.db = stdlib.OpenDB(*cc)
		t.Cleanup(func() { s.db.Close() })
		pool, err := pgxpool.New(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		st, err := postgres.New(ctx, pool, postgres.Config{Schema: s.pgSchema, Logger: outboxtest.Discard})
		if err != nil {
			pool.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close(); pool.Close() })
		s.store, s.bind = st, bindDollar
	case "mysql":
		raw := need(t, "OUTBOX_MYSQL_DSN")
		cfg, err := mysql.ParseDSN(raw)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		name := "outbox_xl_" + suffix
		if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4"); err != nil {
			t.Fatalf("create database %s: %v", name, err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
				t.Logf("drop database %s: %v", name, err)
			}
			admin.Close()
		})
		s.my = cfg.Clone()
		s.my.DBName = name
		u := url.URL{Scheme: "mysql", User: url.UserPassword(cfg.User, cfg.Passwd), Host: cfg.Addr, Path: "/" + name}
		if cfg.Passwd == "" {
			u.User = url.User(cfg.User)
		}
		s.dsn = u.String()
		mustMigrate(t, s.dsn)
		db, err := sql.Open("mysql", s.my.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		st, err := mysql.New(ctx, db, mysql.Config{Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		s.db, s.store, s.bind = db, st, bindQuestion
	default:
		t.Fatalf("unknown store %q", kind)
	}
	return s
}

// mustMigrate makes the outbox on the table layout, whose SQL contract these tests
// check.
func mustMigrate(t *testing.T, dsn string) {
	t.Helper()
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn, "--layout=table"); r.code != 0 {
		t.Fatalf("migrate: %v", r)
	}
}

// param is a statement's :name parameter (no statement of the page has a colon anywhere
// else).
var param = regexp.MustCompile(`:([a-z_]+)`)

// statement is a statement of the page for a driver: without its final semicolon.
func statement(stmt string) string {
	return strings.TrimSuffix(strings.TrimSpace(stmt), ";")
}

// bindNamed keeps :name, which SQLite's driver binds by name.
func bindNamed(stmt string, v map[string]any) (string, []any) {
	stmt = statement(stmt)
	var args []any
	seen := map[string]bool{}
	for _, m := range param.FindAllStringSubmatch(stmt, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			args = append(args, sql.Named(m[1], v[m[1]]))
		}
	}
	return stmt, args
}

// bindDollar writes :name as $1, $2, … (one number per name).
func bindDollar(stmt string, v map[string]any) (string, []any) {
	stmt = statement(stmt)
	var args []any
	num := map[string]int{}
	out := param.ReplaceAllStringFunc(stmt, func(p string) string {
		name := p[1:]
		if num[name] == 0 {
			args = append(args, v[name])
			num[name] = len(args)
		}
		return "$" + strconv.Itoa(num[name])
	})
	return out, args
}

// bindQuestion writes each :name as ?.
func bindQuestion(stmt string, v map[string]any) (string, []any) {
	stmt = statement(stmt)
	var args []any
	out := param.ReplaceAllStringFunc(stmt, func(p string) string {
		args = append(args, v[p[1:]])
		return "?"
	})
	return out, args
}

// exec runs statements in one transaction of the test's own connection.
func (s *sqlStore) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// insert runs the page's statement with values v in a transaction of its own and
// returns the database's error.
func (s *sqlStore) insert(stmt string, v map[string]any) error {
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	q, args := s.bind(stmt, v)
	if _, err := tx.Exec(q, args...); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// statuses reads each event's status by SQL, seq order (the store's reads may fail
// on a broken row).
func (s *sqlStore) statuses(t *testing.T) []string {
	t.Helper()
	rows, err := s.db.Query("SELECT status FROM outbox_events ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var st string
		if err := rows.Scan(&st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fullValues are the parameters of a full statement: every field set.
func fullValues(entity string) map[string]any {
	id, _ := uuid.NewV7()
	return map[string]any{
		"id": id.String(), "type": "order.created", "entity_id": entity, "user_id": "alice",
		"ordering_key": entity, "priority": 7, "max_attempts": 3, "is_new_record": true,
		"metadata": `{"source":"billing","region":"eu"}`, "payload": `{"total":42.5,"items":["a","b"]}`,
	}
}

// fullValuesWith is fullValues with change made to them.
func fullValuesWith(entity string, change func(v map[string]any)) map[string]any {
	v := fullValues(entity)
	change(v)
	return v
}

// recorder is an HTTP sink that keeps every envelope, in arrival order; bodies over
// limit (when positive) are refused with 413.
type recorder struct {
	mu  sync.Mutex
	got []outboxsink.Envelope
	url string
}

func newRecorder(t *testing.T, limit int) *recorder {
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if limit > 0 && len(body) > limit {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		var e outboxsink.Envelope
		if err := json.Unmarshal(body, &e); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, e)
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *recorder) envelopes() []outboxsink.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) byEntity() map[string][]outboxsink.Envelope {
	m := map[string][]outboxsink.Envelope{}
	for _, e := range r.envelopes() {
		m[e.EntityID] = append(m[e.EntityID], e)
	}
	return m
}

// relayOnce runs `outbox relay --once` against the sink.
func relayOnce(t *testing.T, dsn, sinkURL string, extra ...string) result {
	t.Helper()
	args := append([]string{"relay", "--dsn", dsn, "--sink", sinkURL, "--once", "--log-level", "error"}, extra...)
	return runEnv(t, Env{}, args...)
}

// checkDelivered compares what the receiver got with the values written.
func checkDelivered(t *testing.T, got outboxsink.Envelope, v map[string]any) {
	t.Helper()
	str := func(k string) string { s, _ := v[k].(string); return s }
	if want, _ := outbox.CanonicalID(str("id")); want != "" && got.ID != want {
		t.Errorf("id %q, want %q", got.ID, want)
	}
	if got.Type != str("type") || got.EntityID != str("entity_id") || got.UserID != str("user_id") || got.OrderingKey != str("ordering_key") {
		t.Errorf("delivered %+v, want the values written %v", got, v)
	}
	if p, _ := v["priority"].(int); got.Priority != p {
		t.Errorf("priority %d, want %d", got.Priority, p)
	}
	if b, _ := v["is_new_record"].(bool); got.IsNewRecord != b {
		t.Errorf("is_new_record %v, want %v", got.IsNewRecord, b)
	}
	var wantMeta map[string]string
	if m := str("metadata"); m != "" {
		if err := json.Unmarshal([]byte(m), &wantMeta); err != nil {
			t.Fatal(err)
		}
	}
	if !maps.Equal(got.Metadata, wantMeta) {
		t.Errorf("metadata %v, want %v", got.Metadata, wantMeta)
	}
	if string(got.Payload) != str("payload") {
		t.Errorf("payload %s, want %s", got.Payload, str("payload"))
	}
}

// The page lists, for contract 1, the schema versions it covers; a new migration of any
// store fails this test until someone has checked the contract against it and said so
// on the page.
func TestSQLContractCoversEveryMigration(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(contractPage)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^\| (SQLite|PostgreSQL|MySQL / MariaDB|SQLite, the log|PostgreSQL, the log) \|.*\| 1 to (\d+) \|$`)
	got := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		got[m[1]], _ = strconv.Atoi(m[2])
	}
	for store, latest := range map[string]int{"SQLite": sqlite.SchemaVersion, "PostgreSQL": postgres.SchemaVersion, "MySQL / MariaDB": mysql.SchemaVersion,
		"SQLite, the log": sqlite.LogSchemaVersion, "PostgreSQL, the log": postgres.LogSchemaVersion} {
		if got[store] != latest {
			t.Errorf("docs/any-language.md says contract 1 covers %s schema versions 1 to %d, but its migrations go to %d: "+
				"check the page's statements against the new migration (this file's tests run them), then update the table "+
				"(or start contract 2)", store, got[store], latest)
		}
	}
}

// The page's statements, as written, run against every store's schema and the relay
// delivers what they wrote, every field as bound: the full statement, the minimal one
// (defaults for the rest), and on PostgreSQL the NOTIFY beside them.
func TestSQLContractStatementsRunAsDocumented(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			full := fullValues("order-1")
			minID, _ := uuid.NewV7()
			minimal := map[string]any{"id": minID.String(), "type": "order.noted", "entity_id": "order-2"}
			before := time.Now().Add(-5 * time.Second)

			tx, err := s.db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			stmts := []struct {
				name string
				v    map[string]any
			}{{kind + " full", full}, {kind + " minimal", minimal}}
			if kind == "postgres" {
				stmts = append(stmts, struct {
					name string
					v    map[string]any
				}{"postgres notify", full})
			}
			for _, st := range stmts {
				q, args := s.bind(blocks[st.name], st.v)
				if _, err := tx.Exec(q, args...); err != nil {
					tx.Rollback()
					t.Fatalf("the page's %q statement: %v\n%s", st.name, err, q)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			after := time.Now().Add(5 * time.Second)

			// As the library reads them: pending, due now, the times the database's clock.
			ctx := context.Background()
			for _, v := range []map[string]any{full, minimal} {
				e, err := s.store.Get(ctx, v["id"].(string))
				if err != nil {
					t.Fatalf("Get %s: %v", v["id"], err)
				}
				if e.Status != outbox.StatusPending || e.Attempts != 0 || e.CreatedAt.Before(before) || e.CreatedAt.After(after) ||
					!e.UpdatedAt.Equal(e.CreatedAt) || !e.NextAttemptAt.Equal(e.CreatedAt) {
					t.Errorf("written %+v: want pending, no attempt, created, updated and due now (between %v and %v)", e, before, after)
				}
			}
			if e, _ := s.store.Get(ctx, full["id"].(string)); e.MaxAttempts != 3 {
				t.Errorf("max_attempts %d, want 3", e.MaxAttempts)
			}
			if e, _ := s.store.Get(ctx, minimal["id"].(string)); e.MaxAttempts != 0 || e.UserID != "" || e.OrderingKey != "" ||
				e.Priority != 0 || e.IsNewRecord || e.Metadata != nil || e.Payload != nil {
				t.Errorf("minimal event %+v: want the defaults", e)
			}

			rec := newRecorder(t, 0)
			if r := relayOnce(t, s.dsn, rec.url); r.code != 0 || !strings.Contains(r.stdout, "2 delivered, 0 failed") {
				t.Fatalf("relay --once: %v", r)
			}
			got := rec.byEntity()
			if len(got["order-1"]) != 1 || len(got["order-2"]) != 1 {
				t.Fatalf("delivered %+v, want each event once", rec.envelopes())
			}
			checkDelivered(t, got["order-1"][0], full)
			checkDelivered(t, got["order-2"][0], minimal)
			if st := s.statuses(t); !slices.Equal(st, []string{"completed", "completed"}) {
				t.Errorf("statuses after the relay: %v, want both completed", st)
			}
		})
	}
}

// logStores are the stores with an event log.
var logStores = []string{"sqlite", "postgres"}

// newLogStore is newSQLStore with the event log beside the events table, as a new
// outbox is made.
func newLogStore(t *testing.T, kind string) *sqlStore {
	t.Helper()
	s := newSQLStore(t, kind)
	if r := runEnv(t, Env{}, "migrate", "--dsn", s.dsn, "--layout=log"); r.code != 0 {
		t.Fatalf("migrate --layout=log: %v", r)
	}
	return s
}

// The page's statements for the event log, as written, run against the log of every
// store that has one, and the relay delivers what they wrote, every field as bound,
// from the log: nothing goes through the events table.
func TestLogContractStatementsRunAsDocumented(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)
	for _, kind := range logStores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newLogStore(t, kind)
			full := fullValues("order-1")
			minID, _ := uuid.NewV7()
			minimal := map[string]any{"id": minID.String(), "type": "order.noted", "entity_id": "order-2"}
			tx, err := s.db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			for name, v := range map[string]map[string]any{kind + " log full": full, kind + " log minimal": minimal} {
				q, args := s.bind(blocks[name], v)
				if _, err := tx.Exec(q, args...); err != nil {
					tx.Rollback()
					t.Fatalf("the page's %q statement: %v\n%s", name, err, q)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}

			rec := newRecorder(t, 0)
			if r := relayOnce(t, s.dsn, rec.url); r.code != 0 || !strings.Contains(r.stdout, "read 2 events from the log: 2 delivered") {
				t.Fatalf("relay --once: %v", r)
			}
			got := rec.byEntity()
			if len(got["order-1"]) != 1 || len(got["order-2"]) != 1 {
				t.Fatalf("delivered %+v, want each event once", rec.envelopes())
			}
			checkDelivered(t, got["order-1"][0], full)
			checkDelivered(t, got["order-2"][0], minimal)
			if st := s.statuses(t); len(st) != 0 {
				t.Errorf("the events table holds %v, want nothing: both were delivered from the log", st)
			}
		})
	}
}

// clientEvents are the two transactions every client runs: one committed, with its
// business row; one rolled back, with its own.
func clientEvents() (committed, rolledBack map[string]any) {
	committed, rolledBack = fullValues("order-1"), fullValues("order-2")
	rolledBack["type"] = "order.cancelled"
	return committed, rolledBack
}

// checkClientRun checks that the committed transaction, and only it, left its order
// and was delivered, with every field as written.
func checkClientRun(t *testing.T, s *sqlStore, committed map[string]any) {
	t.Helper()
	var orders []string
	rows, err := s.db.Query("SELECT id FROM orders ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		orders = append(orders, id)
	}
	rows.Close()
	if !slices.Equal(orders, []string{"order-1"}) {
		t.Errorf("orders %v, want the committed one only", orders)
	}
	rec := newRecorder(t, 0)
	if r := relayOnce(t, s.dsn, rec.url); r.code != 0 || !strings.Contains(r.stdout, "claimed 1 events: 1 delivered") {
		t.Fatalf("relay --once: %v", r)
	}
	got := rec.envelopes()
	if len(got) != 1 {
		t.Fatalf("delivered %+v, want the committed event only", got)
	}
	checkDelivered(t, got[0], committed)
	if st := s.statuses(t); !slices.Equal(st, []string{"completed"}) {
		t.Errorf("statuses %v, want the one event, completed", st)
	}
}

// sqlLiteral writes v as a SQL literal; backslashes doubles backslashes too (MySQL).
func sqlLiteral(v any, backslashes bool) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case bool:
		if x {
			return "1"
		}
		return "0"
	case int:
		return strconv.Itoa(x)
	case string:
		if backslashes {
			x = strings.ReplaceAll(x, `\`, `\\`)
		}
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	}
	panic(fmt.Sprintf("no literal for %T", v))
}

// runClient runs a client with its script on stdin.
func runClient(t *testing.T, cmd *exec.Cmd, script string) {
	t.Helper()
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s\nscript:\n%s", strings.Join(cmd.Args, " "), err, out.String(), script)
	}
}

// Real clients write an event in a transaction with a business row, as the page shows;
// the relay delivers it, every field as written; a transaction rolled back delivers
// nothing and leaves no row.
func TestWrittenByRealClients(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)

	t.Run("sqlite3 shell", func(t *testing.T) {
		t.Parallel()
		shell := needTool(t, "sqlite3", "sqlite3")
		s := newSQLStore(t, "sqlite")
		s.exec(t, `CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL)`)
		committed, rolledBack := clientEvents()
		script := ".bail on\n"
		for _, tx := range []struct {
			v   map[string]any
			end string
		}{{committed, "COMMIT"}, {rolledBack, "ROLLBACK"}} {
			stmt := param.ReplaceAllStringFunc(blocks["sqlite full"], func(p string) string {
				if p == ":id" && tx.end == "COMMIT" {
					return blocks["sqlite uuid"] // the shell makes the ID, as the page shows
				}
				return sqlLiteral(tx.v[p[1:]], false)
			})
			script += "BEGIN;\nINSERT INTO orders (id, total) VALUES (" + sqlLiteral(tx.v["entity_id"], false) + ", 42.50);\n" +
				stmt + "\n" + tx.end + ";\n"
		}
		runClient(t, exec.Command(shell, s.path), script)
		var id string
		if err := s.db.QueryRow(`SELECT id FROM outbox_events`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if c, err := outbox.CanonicalID(id); err != nil || c != id || id[14] != '4' {
			t.Fatalf("the shell's ID %q: want a version-4 UUID in the canonical spelling", id)
		}
		committed["id"] = id
		checkClientRun(t, s, committed)
	})

	t.Run("psql", func(t *testing.T) {
		t.Parallel()
		psql := needTool(t, "postgresql-client", "psql")
		s := newSQLStore(t, "postgres")
		s.exec(t, `CREATE TABLE orders (id text PRIMARY KEY, total numeric)`)
		// The page's psql block is its statement with psql's quoted variables.
		block := blocks["psql transaction"]
		quoted := param.ReplaceAllString(blocks["postgres full"], ":'$1'")
		if !strings.Contains(block, quoted) {
			t.Fatalf("the page's psql block does not hold its PostgreSQL statement as psql writes it:\n%s\nwant within it:\n%s", block, quoted)
		}
		committed, rolledBack := clientEvents()
		for _, tx := range []struct {
			v      map[string]any
			script string
		}{{committed, block}, {rolledBack, strings.Replace(block, "COMMIT;", "ROLLBACK;", 1)}} {
			args := []string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", s.pgURL}
			for k, v := range tx.v {
				args = append(args, "-v", k+"="+strings.Trim(sqlLiteral(v, false), "'"))
			}
			cmd := exec.Command(psql, args...)
			cmd.Env = append(os.Environ(), "PGOPTIONS=-c search_path="+s.pgSchema)
			runClient(t, cmd, tx.script)
		}
		checkClientRun(t, s, committed)
	})

	t.Run("mariadb client", func(t *testing.T) {
		t.Parallel()
		client := needTool(t, "mariadb-client", "mariadb", "mysql")
		s := newSQLStore(t, "mysql")
		s.exec(t, `CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, total DECIMAL(10, 2))`)
		committed, rolledBack := clientEvents()
		var script strings.Builder
		for _, tx := range []struct {
			v   map[string]any
			end string
		}{{committed, "COMMIT"}, {rolledBack, "ROLLBACK"}} {
			for _, k := range slices.Sorted(maps.Keys(tx.v)) {
				fmt.Fprintf(&script, "SET @%s = %s;\n", k, sqlLiteral(tx.v[k], true))
			}
			script.WriteString("START TRANSACTION;\nINSERT INTO orders (id, total) VALUES (@entity_id, 42.50);\n")
			script.WriteString(param.ReplaceAllString(blocks["mysql full"], "@$1") + "\n" + tx.end + ";\n")
		}
		host, port, _ := strings.Cut(s.my.Addr, ":")
		cmd := exec.Command(client, "--protocol=TCP", "-h", host, "-P", cmpOr(port, "3306"), "-u", s.my.User,
			"--default-character-set=utf8mb4", s.my.DBName)
		cmd.Env = append(os.Environ(), "MYSQL_PWD="+s.my.Passwd)
		runClient(t, cmd, script.String())
		checkClientRun(t, s, committed)
	})

	t.Run("python psycopg2", func(t *testing.T) {
		t.Parallel()
		python := pythonWithPsycopg2(t)
		s := newSQLStore(t, "postgres")
		s.exec(t, `CREATE TABLE orders (id text PRIMARY KEY, total numeric)`)
		// The page's Python lines are the script's.
		if !containsRun(trimmedLines(psycopg2Script), trimmedLines(blocks["psycopg2"])) {
			t.Fatalf("the page's psycopg2 block is not a run of the test's script:\n%s", blocks["psycopg2"])
		}
		dir := t.TempDir()
		scriptPath := filepath.Join(dir, "write_events.py")
		if err := os.WriteFile(scriptPath, []byte(psycopg2Script), 0o644); err != nil {
			t.Fatal(err)
		}
		committed, rolledBack := clientEvents()
		committed["commit"], rolledBack["commit"] = true, false
		input, err := json.Marshal([]map[string]any{committed, rolledBack})
		if err != nil {
			t.Fatal(err)
		}
		delete(committed, "commit")
		cmd := exec.Command(python, scriptPath)
		cmd.Env = append(os.Environ(), "OUTBOX_TEST_DSN="+s.pgURL, "PGOPTIONS=-c search_path="+s.pgSchema,
			"OUTBOX_INSERT="+param.ReplaceAllString(blocks["postgres full"], "%($1)s"))
		runClient(t, cmd, string(input))
		checkClientRun(t, s, committed)
	})
}

// psycopg2Script writes each event of stdin (a JSON array) in a transaction of its own
// with its order, committed or rolled back as the event's "commit" says.
const psycopg2Script = `import json
import os
import sys

import psycopg2


class Rollback(Exception):
    pass


dsn = os.environ["OUTBOX_TEST_DSN"]
OUTBOX_INSERT = os.environ["OUTBOX_INSERT"]
for event in json.load(sys.stdin):
    commit = event.pop("commit")
    try:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:   # one transaction: commit on success
            cur.execute("INSERT INTO orders (id, total) VALUES (%(entity_id)s, 42.50)", event)
            cur.execute(OUTBOX_INSERT, event)   # the statement above, :name written %(name)s
            if not commit:
                raise Rollback()
    except Rollback:
        pass
`

// pythonWithPsycopg2 finds a Python that imports psycopg2: Debian's python3-psycopg2
// is for /usr/bin/python3, which a python3 earlier on PATH (pyenv's) may not be.
func pythonWithPsycopg2(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import psycopg2").Run() == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no python3 imports psycopg2, and CI is set: .ci/run installs it (Debian package python3-psycopg2)")
	}
	t.Skip("no python3 imports psycopg2: skipping (apt-get install python3-psycopg2; CI runs it)")
	return ""
}

func trimmedLines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if l := strings.TrimSpace(line); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func containsRun(have, want []string) bool {
	for i := 0; i+len(want) <= len(have); i++ {
		if slices.Equal(have[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// Rows that break the contract but that the database takes are given up with their
// reason, or delivered as written; none stops the relay or holds back other events.
// The rows the database refuses are refused. (docs/any-language.md's table.)
func TestRowsTheRelayCannotUse(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			stmt := blocks[kind+" full"]
			row := fullValuesWith
			long := strings.Repeat("t", 300)
			var (
				good1      = row("good-1", func(map[string]any) {})
				notJSON    = row("not-json", func(v map[string]any) { v["payload"] = `total: 42.5` })
				longFields = row("long-fields", func(v map[string]any) { v["type"], v["ordering_key"] = long, long })
				oversize   = row("oversize", func(v map[string]any) { v["payload"] = `"` + strings.Repeat("x", 3<<19) + `"` })
				emptyKey   []map[string]any
				good2      = row("good-2", func(map[string]any) {})
			)
			for i := range 3 {
				emptyKey = append(emptyKey, row(fmt.Sprintf("empty-key-%d", i), func(v map[string]any) { v["ordering_key"] = "" }))
			}
			write := func(v map[string]any) error { return s.insert(stmt, v) }
			mustWrite := func(v map[string]any) {
				t.Helper()
				if err := write(v); err != nil {
					t.Fatalf("write %s: %v", v["entity_id"], err)
				}
			}
			mustWrite(good1)
			wantGivenUp := map[string]string{oversize["id"].(string): "http 413"}
			wantDelivered := []string{"good-1", "good-2", "empty-key-0", "empty-key-1", "empty-key-2"}
			switch err := write(notJSON); {
			case kind == "postgres":
				if err == nil || !strings.Contains(err.Error(), "invalid input syntax for type json") {
					t.Errorf("a payload that is not JSON: %v, want PostgreSQL to refuse it", err)
				}
			case err != nil:
				t.Fatalf("write a payload that is not JSON: %v", err)
			default:
				wantGivenUp[notJSON["id"].(string)] = "invalid character"
			}
			switch err := write(longFields); {
			case kind == "mysql":
				if err == nil || !strings.Contains(err.Error(), "Data too long for column 'type'") {
					t.Errorf("a type of 300 bytes: %v, want MySQL to refuse it", err)
				}
			case err != nil:
				t.Fatalf("write a type of 300 bytes: %v", err)
			default:
				wantDelivered = append(wantDelivered, "long-fields")
			}
			mustWrite(oversize)
			for _, v := range emptyKey {
				mustWrite(v)
			}
			mustWrite(good2)

			rec := newRecorder(t, outbox.DefaultMaxPayloadBytes)
			r := relayOnce(t, s.dsn, rec.url)
			want := fmt.Sprintf("%d delivered, %d failed", len(wantDelivered), len(wantGivenUp))
			if r.code != ExitFailure || !strings.Contains(r.stdout, want) ||
				!strings.Contains(r.stderr, fmt.Sprintf("%d of %d delivery attempts failed", len(wantGivenUp), len(wantGivenUp)+len(wantDelivered))) {
				t.Fatalf("relay --once: %v\nwant exit 1, %q, and the failures counted", r, want)
			}
			got := rec.byEntity()
			for _, entity := range wantDelivered {
				if len(got[entity]) != 1 {
					t.Errorf("%s delivered %d times, want once", entity, len(got[entity]))
				}
			}
			if e := got["long-fields"]; len(e) == 1 && (e[0].Type != long || e[0].OrderingKey != long) {
				t.Errorf("the long type and key were not delivered as written: %+v", e[0])
			}
			// The events of the key '' in the order written.
			var order []string
			for _, e := range rec.envelopes() {
				if strings.HasPrefix(e.EntityID, "empty-key-") {
					order = append(order, e.EntityID)
				}
			}
			if !slices.Equal(order, []string{"empty-key-0", "empty-key-1", "empty-key-2"}) {
				t.Errorf("the key '' delivered %v, want its events in the order written", order)
			}
			// Given up, with the reason, for the operator to see.
			for id, reason := range wantGivenUp {
				sr := runEnv(t, Env{}, "show", "--dsn", s.dsn, id)
				if sr.code != 0 || !strings.Contains(sr.stdout, "given up") || !strings.Contains(strings.ToLower(sr.stdout), reason) {
					t.Errorf("outbox show %s: %v\nwant it given up, with %q", id, sr, reason)
				}
			}
			if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn, "--status", "given-up"); lr.code != 0 || strings.Count(lr.stdout, "given up") != len(wantGivenUp) {
				t.Errorf("outbox ls --status given-up: %v, want the %d given up", lr, len(wantGivenUp))
			}
		})
	}
}

// Rows of the event log that break the contract, which the log's table takes (it has
// no CHECK), do not stop the log: each is given up with its reason and moves to the
// events table, where the operator sees it; its key's later events wait behind it
// there; the rows around it are delivered, and the cursor passes them all. Before,
// the first such row failed every read of the log, and nothing after it was
// delivered. (docs/any-language.md's table for the log.)
func TestLogRowsTheRelayCannotUse(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)
	for _, kind := range logStores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newLogStore(t, kind)
			row := func(entity string, change func(v map[string]any)) map[string]any {
				return fullValuesWith(entity, func(v map[string]any) {
					v["ordering_key"] = nil // no key but where a row names one
					change(v)
				})
			}
			write := func(v map[string]any) {
				t.Helper()
				if err := s.insert(blocks[kind+" log full"], v); err != nil {
					t.Fatalf("write %s: %v", v["entity_id"], err)
				}
			}
			id := func(v map[string]any) string { return v["id"].(string) }
			badMeta := row("bad-metadata", func(v map[string]any) { v["metadata"], v["ordering_key"] = `{"count": 1}`, "k" })
			behind := row("behind", func(v map[string]any) { v["ordering_key"] = "k" })
			noType := row("no-type", func(v map[string]any) { v["type"] = "" })
			noEntity := row("", func(map[string]any) {})
			wantGivenUp := map[string]string{
				id(badMeta):  `unusable row: metadata is not a JSON object of strings`,
				id(noType):   `unusable row: type is empty`,
				id(noEntity): `unusable row: entity_id is empty`,
			}
			read := 6
			write(row("good-1", func(map[string]any) {}))
			for _, v := range []map[string]any{badMeta, behind, noType, noEntity} {
				write(v)
			}
			if kind == "sqlite" {
				// SQLite keeps any value in any column.
				badPriority := row("bad-priority", func(v map[string]any) { v["priority"] = "high" })
				notJSON := row("not-json", func(v map[string]any) { v["payload"] = `total: 42.5` })
				write(badPriority)
				write(notJSON)
				badTime, _ := uuid.NewV7()
				s.exec(t, `INSERT INTO outbox_log (id, type, entity_id, user_id, priority, max_attempts, is_new_record, created_at)
					VALUES ('`+badTime.String()+`', 'order.created', 'bad-time', '', 0, 0, 0, 'tomorrow')`)
				wantGivenUp[id(badPriority)] = `unusable row: priority is not an integer: "high"`
				wantGivenUp[id(notJSON)] = "invalid character"
				wantGivenUp[badTime.String()] = `unusable row: created_at is not a time: "tomorrow"`
				read += 3
			}
			write(row("good-2", func(map[string]any) {}))

			rec := newRecorder(t, 0)
			r := relayOnce(t, s.dsn, rec.url)
			if r.code != ExitFailure || !strings.Contains(r.stdout, fmt.Sprintf("read %d events from the log: 2 delivered", read)) {
				t.Fatalf("relay --once: %v\nwant exit 1, the %d events read and the two good ones delivered", r, read)
			}
			got := rec.byEntity()
			if len(got["good-1"]) != 1 || len(got["good-2"]) != 1 || len(rec.envelopes()) != 2 {
				t.Errorf("delivered %+v, want good-1 and good-2 once each, and nothing else", rec.envelopes())
			}
			for id, reason := range wantGivenUp {
				givenUpWith(t, s.dsn, id, reason)
			}
			if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn, "--blocked"); lr.code != 0 || !strings.Contains(lr.stdout, id(behind)) {
				t.Errorf("outbox ls --blocked: %v, want the event behind the given-up one of its key", lr)
			}
			if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn, "--layout=log", "--json"); lr.code != 0 || strings.TrimSpace(lr.stdout) != "[]" {
				t.Errorf("outbox ls --layout=log: %v, want nothing waiting: the cursor passed every row", lr)
			}
		})
	}
}

// givenUpWith checks that the event id is given up, and that `outbox show` says so
// with reason.
func givenUpWith(t *testing.T, dsn, id, reason string) {
	t.Helper()
	sr := runEnv(t, Env{}, "show", "--dsn", dsn, id)
	if sr.code != 0 || !strings.Contains(sr.stdout, "given up") || !strings.Contains(sr.stdout, reason) {
		t.Errorf("outbox show %s: %v\nwant it given up, with %q", id, sr, reason)
	}
}

// Metadata that is not a JSON object of strings does not stop the relay: the row is
// read with no metadata, and its event given up with the reason, while the events
// around it are delivered. `ls`, `show` and `discard` work on it; mended by SQL and
// retried, it is delivered.
func TestBadMetadataIsGivenUpWithItsReason(t *testing.T) {
	t.Parallel()
	blocks := contractBlocks(t)
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			stmt := blocks[kind+" full"]
			good1, good2 := fullValues("good-1"), fullValues("good-2")
			bad := map[string]map[string]any{}
			reasons := map[string]string{
				`{"count": 1}`: `metadata is not a JSON object of strings: the value of "count" is a number: 1`,
				`[1]`:          `metadata is not a JSON object of strings: it is an array: [1]`,
				`"x"`:          `metadata is not a JSON object of strings: it is a string: "x"`,
			}
			if kind == "sqlite" { // the others' JSON columns refuse text that is not JSON
				reasons[`source=billing`] = `metadata is not a JSON object of strings: it is not JSON: "source=billing"`
			}
			writes := []map[string]any{good1}
			for _, md := range slices.Sorted(maps.Keys(reasons)) {
				v := fullValues("bad " + md)
				v["metadata"] = md
				bad[md] = v
				writes = append(writes, v)
			}
			writes = append(writes, good2)
			for _, v := range writes {
				if err := s.insert(stmt, v); err != nil {
					t.Fatalf("write %s: %v", v["entity_id"], err)
				}
			}
			// Before any relay: listed and shown.
			if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn); lr.code != 0 || strings.Count(lr.stdout, "pending") != len(writes) {
				t.Errorf("outbox ls: %v, want the %d events listed", lr, len(writes))
			}
			for md, v := range bad {
				sr := runEnv(t, Env{}, "show", "--dsn", s.dsn, "--json", v["id"].(string))
				var got struct {
					Metadata map[string]string `json:"metadata"`
					Unusable string            `json:"unusable"`
				}
				if err := json.Unmarshal([]byte(sr.stdout), &got); sr.code != 0 || err != nil || got.Metadata != nil || got.Unusable != reasons[md] {
					t.Errorf("outbox show --json of the metadata %s: %v\nwant no metadata and unusable %q", md, sr, reasons[md])
				}
			}

			rec := newRecorder(t, 0)
			r := relayOnce(t, s.dsn, rec.url)
			want := fmt.Sprintf("claimed %d events: 2 delivered, %d failed", len(writes), len(bad))
			if r.code != ExitFailure || !strings.Contains(r.stdout, want) {
				t.Fatalf("relay --once: %v\nwant exit 1 and %q", r, want)
			}
			got := rec.byEntity()
			if len(got) != 2 || len(got["good-1"]) != 1 || len(got["good-2"]) != 1 {
				t.Errorf("delivered %v, want good-1 and good-2 once each", slices.Sorted(maps.Keys(got)))
			}
			for md, v := range bad {
				id := v["id"].(string)
				givenUpWith(t, s.dsn, id, "unusable row: "+reasons[md])
				// The relay's log names the event.
				if !strings.Contains(r.stderr, id) {
					t.Errorf("the relay's log does not name the event %s given up:\n%s", id, r.stderr)
				}
			}
			if st := s.statuses(t); slices.Contains(st, "processing") || slices.Contains(st, "pending") {
				t.Errorf("statuses %v, want every event settled", st)
			}
			if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn, "--status", "given-up"); lr.code != 0 || strings.Count(lr.stdout, "given up") != len(bad) {
				t.Errorf("outbox ls --status given-up: %v, want the %d given up", lr, len(bad))
			}

			// Discarded by ID.
			gone := bad[`[1]`]["id"].(string)
			if dr := runEnv(t, Env{}, "discard", "--dsn", s.dsn, gone); dr.code != 0 {
				t.Errorf("outbox discard %s: %v", gone, dr)
			}
			// Mended by SQL and retried: delivered.
			mend := bad[`{"count": 1}`]
			q, args := s.bind(`UPDATE outbox_events SET metadata = '{"count": "1"}' WHERE entity_id = :entity_id`, mend)
			if _, err := s.db.Exec(q, args...); err != nil {
				t.Fatal(err)
			}
			if rr := runEnv(t, Env{}, "retry", "--dsn", s.dsn, mend["id"].(string)); rr.code != 0 {
				t.Fatalf("outbox retry: %v", rr)
			}
			r = relayOnce(t, s.dsn, rec.url)
			if r.code != 0 || !strings.Contains(r.stdout, "claimed 1 events: 1 delivered, 0 failed") {
				t.Fatalf("relay --once after the row was mended: %v", r)
			}
			if e := rec.byEntity()[mend["entity_id"].(string)]; len(e) != 1 || e[0].Metadata["count"] != "1" {
				t.Errorf("the mended event delivered as %+v, want once with count 1", e)
			}
			if n := len(s.statuses(t)); n != len(writes)-1 {
				t.Errorf("%d rows, want %d: one discarded", n, len(writes)-1)
			}
		})
	}
}

// On SQLite, an ID written in another spelling of its UUID than the canonical one is
// delivered under the canonical spelling, settled, and written in that spelling at
// its claim; before that, `show` and `discard` find it by either spelling. An ID that
// is not a UUID, or that spells another event's ID, is given up with the reason.
func TestSQLiteIDInAnotherSpellingIsSettled(t *testing.T) {
	t.Parallel()
	s := newSQLStore(t, "sqlite")
	stmt := contractBlocks(t)["sqlite full"]
	spelled := map[string]func(string) string{
		"upper":     strings.ToUpper,
		"braces":    func(c string) string { return "{" + c + "}" },
		"no-hyphen": func(c string) string { return strings.ReplaceAll(c, "-", "") },
		"urn":       func(c string) string { return "urn:uuid:" + c },
	}
	canonical := map[string]string{}
	var writes []map[string]any
	for _, name := range slices.Sorted(maps.Keys(spelled)) {
		v := fullValues(name)
		canonical[name] = v["id"].(string)
		v["id"] = spelled[name](v["id"].(string))
		writes = append(writes, v)
	}
	good, notUUID, twin := fullValues("good"), fullValues("not-a-uuid"), fullValues("twin")
	notUUID["id"] = "order-" + notUUID["id"].(string)[:8]
	twin["id"] = strings.ToUpper(good["id"].(string)) // good's ID, in upper case
	writes = append(writes, good, notUUID, twin)
	for _, v := range writes {
		if err := s.insert(stmt, v); err != nil {
			t.Fatal(err)
		}
	}
	// Not claimed yet: found by the canonical spelling and by the stored one.
	for name, id := range canonical {
		for _, asked := range []string{id, spelled[name](id)} {
			if sr := runEnv(t, Env{}, "show", "--dsn", s.dsn, asked); sr.code != 0 || !strings.Contains(sr.stdout, id) {
				t.Errorf("outbox show %s (%s, not yet claimed): %v", asked, name, sr)
			}
		}
	}
	rec := newRecorder(t, 0)
	// The lease is short for the test, and long enough for the store's calls, which
	// must answer within a third of it (2 s: under the race detector on a busy machine
	// a SQLite stats call took over the 500 ms a 1.5 s lease left it).
	for i := range 2 {
		if i > 0 {
			time.Sleep(6100 * time.Millisecond) // the first run's lease would have expired
		}
		r := relayOnce(t, s.dsn, rec.url, "--lease", "6s")
		want := "claimed 0 events"
		if i == 0 {
			want = fmt.Sprintf("claimed %d events: %d delivered, 2 failed", len(writes), len(writes)-2)
		}
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("relay --once #%d: %v\nwant %q", i+1, r, want)
		}
	}
	got := rec.byEntity()
	for name, id := range canonical {
		if e := got[name]; len(e) != 1 || e[0].ID != id {
			t.Errorf("%s: delivered %+v, want once, with the canonical ID %s", name, e, id)
		}
	}
	if len(got["good"]) != 1 || len(got["not-a-uuid"]) != 0 || len(got["twin"]) != 0 {
		t.Errorf("delivered good %d, not-a-uuid %d, twin %d times; want 1, 0, 0",
			len(got["good"]), len(got["not-a-uuid"]), len(got["twin"]))
	}
	if st := s.statuses(t); !slices.Equal(st, []string{"completed", "completed", "completed", "completed", "completed", "failed", "failed"}) {
		t.Errorf("statuses %v, want the four spellings and good completed, the two others given up", st)
	}
	lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn, "--status", "given-up")
	for _, reason := range []string{`id is not a UUID: "` + notUUID["id"].(string), `id "` + twin["id"].(string) + `" is another spelling`} {
		if lr.code != 0 || !strings.Contains(lr.stdout, reason[:20]) {
			t.Errorf("outbox ls --status given-up: %v\nwant %q", lr, reason)
		}
	}
	var reasons []string
	rows, err := s.db.Query("SELECT last_error FROM outbox_events WHERE status = 'failed' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r)
	}
	if len(reasons) != 2 || !strings.Contains(reasons[0], `unusable row: id is not a UUID: "`+notUUID["id"].(string)+`"`) ||
		!strings.Contains(reasons[1], `unusable row: id "`+twin["id"].(string)+`" is another spelling of the ID of another event`) {
		t.Errorf("reasons %q", reasons)
	}
	// Claimed, the IDs are stored in the canonical spelling; still found by the other.
	upper := canonical["upper"]
	if sr := runEnv(t, Env{}, "show", "--dsn", s.dsn, strings.ToUpper(upper)); sr.code != 0 || !strings.Contains(sr.stdout, "completed") {
		t.Errorf("outbox show of the upper-case ID after delivery: %v", sr)
	}
	var n int
	if err := s.db.QueryRow("SELECT count(*) FROM outbox_events WHERE id = ?", upper).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows with the canonical ID %s, %v; want the claim to have written it so", n, upper, err)
	}
	if dr := runEnv(t, Env{}, "discard", "--dsn", s.dsn, "{"+strings.ToUpper(canonical["braces"])+"}"); dr.code != 0 {
		t.Errorf("outbox discard in yet another spelling: %v", dr)
	}
	if n := len(s.statuses(t)); n != len(writes)-1 {
		t.Errorf("%d rows, want %d: one discarded", n, len(writes)-1)
	}
}

// SQLite keeps any type in any column. A time written as text in SQLite's formats
// (datetime('now')) or RFC 3339, or as REAL microseconds (the statement without its
// CAST), is read as that time and the event delivered; a value that cannot be read (a
// time 'tomorrow', a priority 'high') has its event given up with the reason naming
// the column, while the others are delivered.
func TestSQLiteValuesOfAnotherTypeAreReadOrGivenUp(t *testing.T) {
	t.Parallel()
	s := newSQLStore(t, "sqlite")
	full := contractBlocks(t)["sqlite full"]
	const micros = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
	with := func(old, new string) string {
		if !strings.Contains(full, old) {
			t.Fatalf("the sqlite full statement has no %s", old)
		}
		return strings.ReplaceAll(full, old, new)
	}
	rows := []struct {
		entity, stmt, reason string
	}{
		{"good", full, ""},
		{"text-time", with(micros, "datetime('now')"), ""},
		{"rfc3339", with(micros, "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"), ""},
		{"real-micros", with(micros, "(julianday('now') - 2440587.5) * 86400000000 + 0.5"), ""},
		{"tomorrow", strings.Replace(full, micros, "'tomorrow'", 1), `created_at is not a time: "tomorrow"`},
		{"high", with(":priority,", "'high',"), `priority is not an integer: "high"`},
	}
	ids := map[string]string{}
	for _, row := range rows {
		v := fullValues(row.entity)
		ids[row.entity] = v["id"].(string)
		if err := s.insert(row.stmt, v); err != nil {
			t.Fatalf("write %s: %v", row.entity, err)
		}
	}
	if lr := runEnv(t, Env{}, "ls", "--dsn", s.dsn); lr.code != 0 || strings.Count(lr.stdout, "pending") != len(rows) {
		t.Errorf("outbox ls: %v, want the %d events listed", lr, len(rows))
	}
	before := time.Now().Add(-time.Minute)
	rec := newRecorder(t, 0)
	r := relayOnce(t, s.dsn, rec.url)
	if r.code != ExitFailure || !strings.Contains(r.stdout, "claimed 6 events: 4 delivered, 2 failed") {
		t.Fatalf("relay --once: %v\nwant the four readable events delivered, the two others given up", r)
	}
	got := rec.byEntity()
	for _, row := range rows {
		if row.reason != "" {
			if len(got[row.entity]) != 0 {
				t.Errorf("%s delivered, want it given up", row.entity)
			}
			givenUpWith(t, s.dsn, ids[row.entity], "unusable row: "+row.reason)
			if !strings.Contains(r.stderr, ids[row.entity]) {
				t.Errorf("the relay's log does not name the event %s given up:\n%s", ids[row.entity], r.stderr)
			}
			continue
		}
		e := got[row.entity]
		if len(e) != 1 {
			t.Errorf("%s delivered %d times, want once", row.entity, len(e))
			continue
		}
		if e[0].CreatedAt.Before(before) || e[0].CreatedAt.After(time.Now()) {
			t.Errorf("%s: created at %v, want the time it was written", row.entity, e[0].CreatedAt)
		}
	}
	if st := s.statuses(t); !slices.Equal(st, []string{"completed", "completed", "completed", "completed", "failed", "failed"}) {
		t.Errorf("statuses %v", st)
	}
}
