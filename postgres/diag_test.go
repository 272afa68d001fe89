package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox/postgres"
)

func TestDiagPlans(t *testing.T) {
	if os.Getenv("DIAG") == "" {
		t.Skip()
	}
	pool := newPool(t, 4, "")
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	now := time.Now()
	populate(t, s, table, 10000, 90000, now.Add(-time.Hour))
	ctx := context.Background()
	conn, _ := pool.Acquire(ctx)
	defer conn.Release()
	for _, q := range []string{
		`SELECT relpages, reltuples, relallvisible, relname FROM pg_class WHERE relnamespace = '` + schema + `'::regnamespace ORDER BY relname`,
		`EXPLAIN SELECT type, count(*) FROM ` + table + ` WHERE status = 'completed' GROUP BY type`,
		`SET enable_seqscan = off`,
		`EXPLAIN ANALYZE SELECT type, count(*) FROM ` + table + ` WHERE status = 'completed' GROUP BY type`,
		`SET enable_seqscan = on`,
		`EXPLAIN ANALYZE SELECT type, count(*) FROM ` + table + ` WHERE status = 'completed' GROUP BY type`,
		`EXPLAIN DELETE FROM ` + table + ` WHERE seq IN (SELECT seq FROM ` + table + ` WHERE status = 'completed' AND completed_at < now() ORDER BY completed_at LIMIT 1000 FOR UPDATE SKIP LOCKED)`,
	} {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		if err != nil {
			t.Fatal(err)
		}
		t.Log(q)
		for _, v := range vals {
			t.Log(v...)
		}
	}
}
