package postgres_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox/postgres"
)

// populate fills s's table with pending rows and completed rows straight in SQL (as
// fast as the server can write them), then analyzes it, as autovacuum would.
func populate(tb testing.TB, s *postgres.Store, table string, pending, completed int, at time.Time) {
	tb.Helper()
	ctx := context.Background()
	_, err := s.Pool().Exec(ctx, `
INSERT INTO `+table+` (id, type, entity_id, user_id, status, priority, ordering_key, payload,
    created_at, updated_at, next_attempt_at, completed_at, attempts)
SELECT gen_random_uuid(), (ARRAY['progressEntry','physicalAttribute','activitySnapshot'])[1 + i % 3],
       'entity-' || i, 'user-' || (i % 1000), CASE WHEN i <= $2::int THEN 'completed' ELSE 'pending' END,
       CASE WHEN i % 10 = 0 THEN 10 ELSE 0 END, 'entity-' || i, '{"kind":"weight","quantity":72.5}',
       $1, $1, CASE WHEN i <= $2::int THEN NULL ELSE $1::timestamptz END, CASE WHEN i <= $2::int THEN $1::timestamptz END,
       CASE WHEN i <= $2::int THEN 1 ELSE 0 END
FROM generate_series(1, $2::int + $3::int) AS i`, at, completed, pending)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
		tb.Fatal(err)
	}
}

func TestPlans(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("OUTBOX_PG_PLANS_ROWS"))
	if n == 0 {
		n = 100_000
	}
	pool := newPool(t, 4, "")
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema})
	table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	at := time.Now().Add(-time.Hour)
	populate(t, s, table, n/10, n-n/10, at)
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name string
		args pgx.NamedArgs
	}{
		{"claimAll", pgx.NamedArgs{"now": now, "now_us": now.UnixMicro(), "owner": "o", "lease_until": now.Add(time.Minute), "limit": 100, "default_max": 5, "skip_given_up": false}},
	} {
		plan, err := s.Explain(ctx, tc.name, tc.args, true)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s:\n%s", tc.name, plan)
	}
}
