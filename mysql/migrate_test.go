package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

// Runs without a server: the configuration is refused before the pool is used (a
// *sql.DB connects lazily).
func TestConfigIsValidatedAtConstruction(t *testing.T) {
	t.Parallel()
	cfg := gomysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", "127.0.0.1:1", "none"
	c, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	tests := []struct {
		name  string
		cfg   mysql.Config
		field string
	}{
		{"table with a backquote", mysql.Config{Table: "x`; DROP TABLE y; --"}, "mysql.Config.Table"},
		{"table starting with a digit", mysql.Config{Table: "1outbox"}, "mysql.Config.Table"},
		{"table with a dot", mysql.Config{Table: "a.b"}, "mysql.Config.Table"},
		{"table too long", mysql.Config{Table: strings.Repeat("t", 47)}, "mysql.Config.Table"},
		{"negative payload limit", mysql.Config{MaxPayloadBytes: -1}, "mysql.Config.MaxPayloadBytes"},
		{"serializable", mysql.Config{Isolation: sql.LevelSerializable}, "mysql.Config.Isolation"},
		{"read uncommitted", mysql.Config{Isolation: sql.LevelReadUncommitted}, "mysql.Config.Isolation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, run := range map[string]func() error{
				"Validate": tc.cfg.Validate,
				"New":      func() error { _, err := mysql.New(context.Background(), db, tc.cfg); return err },
				"Migrate":  func() error { _, err := mysql.Migrate(context.Background(), db, tc.cfg); return err },
			} {
				err := run()
				var fe *outbox.FieldError
				if !errors.Is(err, outbox.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("%s: %v; want an ErrInvalid FieldError naming %s", name, err, tc.field)
				}
			}
		})
	}
	if err := (mysql.Config{Table: strings.Repeat("t", 46)}).Validate(); err != nil {
		t.Errorf("a 46-byte table name: %v", err)
	}
	if _, err := mysql.New(context.Background(), nil, mysql.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Errorf("New(nil db) = %v, want ErrInvalid", err)
	}
}

func TestNewFailsClearlyOnAnUnmigratedTable(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	_, err := mysql.New(context.Background(), db, mysql.Config{Table: freshTable(t, db)})
	if !errors.Is(err, mysql.ErrNotMigrated) || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("New on a missing table: %v; want ErrNotMigrated telling to run Migrate", err)
	}
}

// A session whose default isolation is READ UNCOMMITTED would show events that may
// still roll back: New refuses it.
func TestNewRefusesReadUncommittedSessions(t *testing.T) {
	t.Parallel()
	db := openDB(t, 2, func(c *gomysql.Config) {
		c.Params = map[string]string{isolationVariable(t): "'READ-UNCOMMITTED'"}
	})
	cfg := mysql.Config{Table: freshTable(t, db)}
	if _, err := mysql.Migrate(context.Background(), db, cfg); err != nil {
		t.Fatal(err)
	}
	_, err := mysql.New(context.Background(), db, cfg)
	if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "READ UNCOMMITTED") {
		t.Fatalf("New on a READ UNCOMMITTED session: %v; want ErrInvalid naming the level", err)
	}
}

// Several relays start at once, each running Migrate: one applies the migrations,
// the others wait on the named lock and find nothing to do.
func TestMigrateConcurrentlyAppliesOnce(t *testing.T) {
	t.Parallel()
	db := openDB(t, 8, nil)
	cfg := mysql.Config{Table: freshTable(t, db)}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied [][]int
		errs    []error
	)
	for range 6 {
		wg.Go(func() {
			v, err := mysql.Migrate(context.Background(), db, cfg)
			mu.Lock()
			defer mu.Unlock()
			applied, errs = append(applied, v), append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	var all []int
	for _, v := range applied {
		all = append(all, v...)
	}
	want := make([]int, mysql.SchemaVersion)
	for i := range want {
		want[i] = i + 1
	}
	if slices.Sort(all); !slices.Equal(all, want) {
		t.Fatalf("versions applied across 6 runs: %v, want each of %v once", all, want)
	}
	if again, err := mysql.Migrate(context.Background(), db, cfg); err != nil || len(again) != 0 {
		t.Fatalf("Migrate on an up-to-date table = %v, %v; want nothing applied", again, err)
	}
	s, err := mysql.New(context.Background(), db, cfg)
	if err != nil {
		t.Fatalf("New after Migrate: %v", err)
	}
	s.Close()
}

func TestEnqueueRefusesWhatMySQLCannotHold(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db, mysql.Config{})
	ctx := context.Background()
	existing := outbox.NewEvent("t", "e", "u")
	if err := s.Enqueue(ctx, time.Now(), existing); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		event *outbox.Event
		field string
	}{
		{"invalid UTF-8 in user ID", outbox.NewEvent("t", "e", "\xff"), "UserID"},
		{"invalid UTF-8 in metadata", &outbox.Event{Type: "t", EntityID: "e", Metadata: map[string]string{"k": "v\xc3"}}, "Metadata"},
		{"ID already used", &outbox.Event{ID: existing.ID, Type: "t", EntityID: "e"}, "ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, batch := range [][]*outbox.Event{{tc.event}, {outbox.NewEvent("t", "good", "u"), tc.event}} {
				err := s.Enqueue(ctx, time.Now(), batch...)
				var fe *outbox.FieldError
				if !errors.Is(err, outbox.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("Enqueue of %d events: %v; want an ErrInvalid FieldError naming %s", len(batch), err, tc.field)
				}
				if n := count(t, db, s, "TRUE"); n != 1 {
					t.Fatalf("%d events stored, want only the one from before", n)
				}
			}
		})
	}
}

// What MySQL would change is handed back as written: control characters and a
// trailing space, four-byte UTF-8, quotes and backslashes inside JSON metadata, a
// payload's spacing and key order, an uppercase or braced ID (canonicalized). (A NUL
// byte is refused by the core before any store sees it.)
func TestEnqueueRoundTripsExactly(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, mysql.Config{})
	e := &outbox.Event{ID: "{0190A6E2-8C4B-7D3E-9F00-0123456789AB}", Type: "t", EntityID: "a\tb\x01 ", UserID: "🙂",
		Payload: []byte(`{"z": 1,  "a": [true]}`), Metadata: map[string]string{"k": "v\"\\\x1f🙂"}}
	if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	if e.ID != "0190a6e2-8c4b-7d3e-9f00-0123456789ab" {
		t.Fatalf("ID after enqueue %q", e.ID)
	}
	got, err := s.Get(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.EntityID != e.EntityID || got.UserID != e.UserID || string(got.Payload) != string(e.Payload) || got.Metadata["k"] != e.Metadata["k"] {
		t.Fatalf("read back entity %q user %q payload %s metadata %q", got.EntityID, got.UserID, got.Payload, got.Metadata)
	}
}
