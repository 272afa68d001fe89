package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox/inbox"
)

// BenchmarkReceiverTx measures what the inbox adds to a message: the same receiver
// transaction (one insert, commit) without it and with it (plus the ID's insert, and
// on PostgreSQL the isolation check in the same statement). ns/op is the pair.
//
//	go test -run '^$' -bench ReceiverTx -benchtime 2000x ./inbox/
func BenchmarkReceiverTx(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchReceiverTx(b, openSQLite(b), inbox.SQLite, "?") })
	b.Run("postgres", func(b *testing.B) { benchReceiverTx(b, postgresDB(b), inbox.Postgres, "$1") })
	b.Run("mysql", func(b *testing.B) { benchReceiverTx(b, mysqlDB(b), inbox.MySQL, "?") })
}

func benchReceiverTx(b *testing.B, db *sql.DB, d inbox.Dialect, ph string) {
	ctx := context.Background()
	suffix := uuid.NewString()[:8]
	cfg := inbox.Config{Dialect: d, Table: "inbox_bench_" + suffix}
	effects := "inbox_bench_effects_" + suffix
	if _, err := inbox.Migrate(ctx, db, cfg); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE ` + effects + ` (msg_id VARCHAR(255) NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, t := range []string{effects, cfg.Table, cfg.Table + "_schema_migrations"} {
			db.Exec(`DROP TABLE ` + t)
		}
	})
	ib, err := inbox.New(ctx, db, cfg)
	if err != nil {
		b.Fatal(err)
	}
	insert := `INSERT INTO ` + effects + ` (msg_id) VALUES (` + ph + `)`
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = uuid.Must(uuid.NewV7()).String()
		}
		return out
	}
	without := func(id string) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, insert, id); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	with := func(id string) {
		applied, err := ib.Process(ctx, id, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, insert, id)
			return err
		})
		if err != nil || !applied {
			b.Fatal(fmt.Sprint(applied, err))
		}
	}
	// The two alternate, message by message, so that both see the same machine: on a
	// shared one the cost of a commit drifts by more than the inbox adds.
	msgs := ids(2 * b.N)
	var tWithout, tWith time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		without(msgs[2*i])
		mid := time.Now()
		with(msgs[2*i+1])
		tWith += time.Since(mid)
		tWithout += mid.Sub(start)
	}
	b.ReportMetric(float64(tWithout.Nanoseconds())/float64(b.N), "ns/msg-without")
	b.ReportMetric(float64(tWith.Nanoseconds())/float64(b.N), "ns/msg-with")
	b.ReportMetric(float64(tWith)/float64(tWithout), "ratio")
}
