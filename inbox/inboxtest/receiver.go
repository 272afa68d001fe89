package inboxtest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/sqlite"
)

// Receiver is a throwaway receiving database for consumer tests: a SQLite file with a
// migrated inbox and an effect table without a unique key, so a second effect shows.
type Receiver struct {
	DB    *sql.DB
	Inbox *inbox.Inbox
}

// NewReceiver opens a Receiver in t's temporary directory, closed when the test ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "receiver.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := inbox.Config{Dialect: inbox.SQLite}
	if _, err := inbox.Migrate(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE effects (msg_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ib, err := inbox.New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Receiver{DB: db, Inbox: ib}
}

// Apply is the effect of message msgID: one row in the effect table.
func (r *Receiver) Apply(ctx context.Context, tx *sql.Tx, msgID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO effects (msg_id) VALUES (?)`, msgID)
	return err
}

// Effects counts the effects of msgID.
func (r *Receiver) Effects(t testing.TB, msgID string) int {
	t.Helper()
	var n int
	if err := r.DB.QueryRow(`SELECT count(*) FROM effects WHERE msg_id = ?`, msgID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Counts returns how many effects there are, and of how many distinct messages.
func (r *Receiver) Counts(t testing.TB) (effects, distinct int) {
	t.Helper()
	if err := r.DB.QueryRow(`SELECT count(*), count(DISTINCT msg_id) FROM effects`).Scan(&effects, &distinct); err != nil {
		t.Fatal(err)
	}
	return effects, distinct
}
