package inbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   inbox.Config
		field string // "" for a valid config
	}{
		{"defaults", inbox.Config{Dialect: inbox.SQLite}, ""},
		{"qualified on postgres", inbox.Config{Dialect: inbox.Postgres, Table: "app.inbox"}, ""},
		{"no dialect", inbox.Config{}, "Dialect"},
		{"unknown dialect", inbox.Config{Dialect: 9}, "Dialect"},
		{"upper case table", inbox.Config{Dialect: inbox.Postgres, Table: "Inbox"}, "Table"},
		{"table with a quote", inbox.Config{Dialect: inbox.MySQL, Table: "inbox'; DROP TABLE x"}, "Table"},
		{"qualified on sqlite", inbox.Config{Dialect: inbox.SQLite, Table: "main.inbox"}, "Table"},
		{"negative retention", inbox.Config{Dialect: inbox.SQLite, Retention: -time.Hour}, "Retention"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "inbox.Config."+tt.field) {
				t.Fatalf("got %v, want ErrInvalid naming inbox.Config.%s", err, tt.field)
			}
		})
	}
}

// New refuses a database whose inbox table was not migrated, and writes nothing.
func TestNewNeedsMigration(t *testing.T) {
	db := openSQLite(t)
	ctx := context.Background()
	if _, err := inbox.New(ctx, db, inbox.Config{Dialect: inbox.SQLite}); !errors.Is(err, inbox.ErrNotMigrated) {
		t.Fatalf("New on an empty database: %v, want ErrNotMigrated", err)
	}
	var tables int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d tables created by a refused New (%v)", tables, err)
	}
	cfg := inbox.Config{Dialect: inbox.SQLite}
	for i, want := range []int{1, 0} {
		versions, err := inbox.Migrate(ctx, db, cfg)
		if err != nil || len(versions) != want {
			t.Fatalf("migration %d applied %v, %v; want %d versions", i+1, versions, err, want)
		}
	}
	if _, err := inbox.New(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := inbox.Migrate(ctx, db, inbox.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("Migrate without a dialect: %v", err)
	}
}

func TestUUIDv7Time(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC)
	tests := []struct {
		id   string
		want time.Time
		ok   bool
	}{
		{"019cb73d-3220-7000-8000-000000000000", at, true},
		{"0190f4c2-6d1e-4a3b-9c4d-5e6f708192a3", time.Time{}, false}, // version 4
		{"order-17", time.Time{}, false},
		{"019cb78b9efc700080000000000000000000", time.Time{}, false}, // not the canonical form
	}
	for _, tt := range tests {
		got, ok := inbox.UUIDv7Time(tt.id)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("UUIDv7Time(%q) = %v, %v; want %v, %v", tt.id, got, ok, tt.want, tt.ok)
		}
	}
}
