package postgres_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

func count(t *testing.T, s *postgres.Store) int {
	t.Helper()
	var n int
	cfg := s.Config()
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{cfg.Schema, cfg.Table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The data and its event commit together through database/sql too.
func TestEnqueueSQLTxCommitsAndRollsBackWithTheData(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	ctx := context.Background()
	db := stdlib.OpenDBFromPool(s.Pool())
	t.Cleanup(func() { db.Close() })
	data := pgx.Identifier{s.Config().Schema, "progress_entries"}.Sanitize()
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+data+` (id text PRIMARY KEY, quantity float8)`); err != nil {
		t.Fatal(err)
	}
	save := func(id string, commit bool) *outbox.Event {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+data+` VALUES ($1, 72.5)`, id); err != nil {
			t.Fatal(err)
		}
		e := outbox.NewEvent("order.created", id, "u")
		e.Metadata = map[string]string{"source": "manual_entry"}
		e.Payload = []byte(`{"quantity": 72.5,  "unit":"kg"}`)
		if err := s.EnqueueSQLTx(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	gone := save("rolled-back", false)
	if _, err := s.Get(ctx, gone.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("event of a rolled-back transaction: %v, want ErrNotFound", err)
	}
	kept := save("committed", true)
	got, err := s.Get(ctx, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != kept.Seq || string(got.Payload) != `{"quantity": 72.5,  "unit":"kg"}` || got.Metadata["source"] != "manual_entry" {
		t.Fatalf("stored event: seq %d (enqueue said %d), payload %s, metadata %v; want the payload byte for byte",
			got.Seq, kept.Seq, got.Payload, got.Metadata)
	}
	var rows int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+data).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("data rows %d (%v), want 1: the committed one", rows, err)
	}
}

// What PostgreSQL cannot store is refused before anything is written, naming the field.
func TestEnqueueRefusesWhatPostgreSQLCannotHold(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
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
		{"NUL in entity ID", outbox.NewEvent("t", "a\x00b", "u"), "EntityID"},
		{"invalid UTF-8 in user ID", outbox.NewEvent("t", "e", "\xff"), "UserID"},
		{"NUL in metadata", &outbox.Event{Type: "t", EntityID: "e", Metadata: map[string]string{"k": "v\x00"}}, "Metadata"},
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
				if n := count(t, s); n != 1 {
					t.Fatalf("%d events stored, want only the one from before", n)
				}
			}
		})
	}
}

// An uppercase or braced UUID is stored, and given back, in its canonical form.
func TestEnqueueCanonicalizesTheID(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	e := &outbox.Event{ID: "{0190A6E2-8C4B-7D3E-9F00-0123456789AB}", Type: "t", EntityID: "e"}
	if err := s.Enqueue(context.Background(), time.Now(), e); err != nil {
		t.Fatal(err)
	}
	if e.ID != "0190a6e2-8c4b-7d3e-9f00-0123456789ab" {
		t.Fatalf("ID after enqueue %q", e.ID)
	}
	if _, err := s.Get(context.Background(), e.ID); err != nil {
		t.Fatal(err)
	}
}

// A database/sql transaction of another driver is refused with an error that says
// what EnqueueSQLTx needs, not the driver's "unsupported type pgx.NamedArgs".
func TestEnqueueSQLTxOfAnotherDriverSaysWhatItNeeds(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, postgres.Config{})
	ctx := context.Background()
	other, err := sqlite.Open(filepath.Join(t.TempDir(), "other.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	err = s.EnqueueSQLTx(ctx, tx, outbox.NewEvent("t", "e", "u"))
	if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "pgx's stdlib driver") || strings.Contains(err.Error(), "unsupported type") {
		t.Fatalf("EnqueueSQLTx on a SQLite transaction: %v", err)
	}
	if n := count(t, s); n != 0 {
		t.Fatalf("%d events written", n)
	}
}
