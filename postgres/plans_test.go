package postgres_test

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// populate fills s's table with completed rows, then pending rows, straight in SQL
// (as fast as the server writes them), and analyzes it, as autovacuum would.
func populate(tb testing.TB, s *postgres.Store, table string, pending, completed int, at time.Time) {
	tb.Helper()
	ctx := context.Background()
	_, err := s.Pool().Exec(ctx, `
INSERT INTO `+table+` (id, type, entity_id, user_id, status, priority, ordering_key, payload,
    created_at, updated_at, next_attempt_at, completed_at, attempts)
SELECT gen_random_uuid(), (ARRAY['progressEntry','physicalAttribute','activitySnapshot'])[1 + i % 3],
       'entity-' || i, 'user-' || (i % 1000), CASE WHEN i <= $2::int THEN 'completed' ELSE 'pending' END,
       CASE WHEN i % 10 = 0 THEN 10 ELSE 0 END, 'entity-' || i, '{"kind":"weight","quantity":72.5}',
       $1, $1, CASE WHEN i <= $2::int THEN NULL ELSE $1::timestamptz END,
       CASE WHEN i <= $2::int THEN $1::timestamptz END, CASE WHEN i <= $2::int THEN 1 ELSE 0 END
FROM generate_series(1, $2::int + $3::int) AS i`, at, completed, pending)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
		tb.Fatal(err)
	}
}

// The store's statements, planned on a large table whose events are mostly completed
// (as retention keeps them), with some pending, in flight, retrying, given up and
// blocked: none may read the whole table. OUTBOX_PG_PLANS_ROWS sets the size
// (default 100,000); run with -v to read the plans.
func TestPlansUseTheIndexes(t *testing.T) {
	t.Parallel()
	rows := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_PG_PLANS_ROWS")); err == nil && v > 0 {
		rows = v
	}
	pool := ownDatabase(t, 4)
	schema := freshSchema(t, pool)
	s := newStore(t, pool, postgres.Config{Schema: schema, DisableListen: true})
	table := pgx.Identifier{schema, "outbox_events"}.Sanitize()
	now := time.Now()
	populate(t, s, table, rows/10, rows-rows/10, now.Add(-time.Hour))
	ctx := context.Background()
	// Some of the pending ones in flight, retrying, given up (with a later event of
	// their key waiting behind them).
	for _, q := range []string{
		`UPDATE ` + table + ` SET status = 'processing', attempts = 1, lease_owner = 'relay-a',
		    lease_expires_at = $1::timestamptz + interval '1 minute' WHERE seq % 100 = 1 AND status = 'pending'`,
		`UPDATE ` + table + ` SET status = 'failed', attempts = 1, next_attempt_at = $1::timestamptz + (seq % 7 - 3) * interval '1 minute',
		    last_error = '503' WHERE seq % 100 = 2 AND status = 'pending'`,
		`UPDATE ` + table + ` SET status = 'failed', attempts = 5, next_attempt_at = NULL, last_error = '400'
		    WHERE seq % 1000 = 3 AND status = 'pending'`,
		`UPDATE ` + table + ` SET ordering_key = 'entity-' || (seq - 1) WHERE seq % 1000 = 4 AND status = 'pending'`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, now)
		}
		if _, err := pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	// VACUUM too, as autovacuum would: without a visibility map the planner may prefer
	// a sequential scan to an index-only one.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
		t.Fatal(err)
	}
	var inFlight, completed []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(id::text) FROM (SELECT id FROM `+table+` WHERE status = 'processing' LIMIT 100) p`).Scan(&inFlight); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT array_agg(id::text) FROM (SELECT id FROM `+table+` WHERE status = 'completed' LIMIT 1) p`).Scan(&completed); err != nil {
		t.Fatal(err)
	}
	claim := pgx.NamedArgs{"now": now, "now_us": now.UnixMicro(), "owner": "relay-b", "lease_until": now.Add(time.Minute),
		"limit": 100, "default_max": 5, "skip_given_up": false}
	filter := func(set pgx.NamedArgs) pgx.NamedArgs {
		a := pgx.NamedArgs{"all_ids": true, "ids": []string{}, "status": "", "given_up": false, "due_before": nil,
			"stuck_at": nil, "blocked": false,
			"type": "", "user_id": "", "after_seq": 0, "limit": 100, "now": now}
		for k, v := range set {
			a[k] = v
		}
		return a
	}
	tests := []struct {
		name, statement string
		args            pgx.NamedArgs
	}{
		{"claim", "claimAll", claim},
		{"claim for one user", "claimUser", with(claim, "user_id", "user-7")},
		{"claim for one type", "claimType", with(claim, "type", "activitySnapshot")},
		{"claim for two types", "claimTypes", with(claim, "types", []string{"activitySnapshot", "physicalAttribute"})},
		{"claim holding a type back", "claimSkipping", with(claim, "skip_types", []string{"activitySnapshot"})},
		{"settle", "settleEvents", pgx.NamedArgs{"now": now, "now_us": now.UnixMicro(), "owner": "relay-a",
			"delivered": inFlight[10:], "failed": inFlight[5:10], "errors": []string{"a", "b", "c", "d", "e"},
			"next_attempts": []*time.Time{&now, &now, &now, nil, nil}, "released": inFlight[:5],
			"released_errors": []string{"destination held: unreachable", "", "", "", ""}}},
		{"extend lease", "extendLease", pgx.NamedArgs{"until": now.Add(time.Minute), "ids": inFlight, "owner": "relay-a"}},
		{"get", "getEvent", pgx.NamedArgs{"id": completed[0]}},
		{"cleanup batch", "deleteCompleted", pgx.NamedArgs{"before": now, "limit": 1000}},
		{"stats: active", "countActive", pgx.NamedArgs{"user_id": ""}},
		{"stats: active, one user", "countActive", pgx.NamedArgs{"user_id": "user-7"}},
		{"stats: completed", "countCompleted", pgx.NamedArgs{"user_id": ""}},
		{"stats: completed, one user", "countCompleted", pgx.NamedArgs{"user_id": "user-7"}},
		{"stats: stale and oldest", "countWaiting", pgx.NamedArgs{"user_id": "", "stale_before": now.Add(-5 * time.Minute), "now": now}},
		{"stats: stuck", "countStuck", pgx.NamedArgs{"user_id": "", "now": now.Add(time.Hour)}},
		{"stats: recent outcomes", "countRecent", pgx.NamedArgs{"user_id": "", "since": now.Add(-15 * time.Minute)}},
		{"stats: recent outcomes, one user", "countRecent", pgx.NamedArgs{"user_id": "user-7", "since": now.Add(-15 * time.Minute)}},
		{"stats: blocked", "countBlocked", pgx.NamedArgs{"user_id": ""}},
		{"list stale", "listActive", filter(pgx.NamedArgs{"due_before": now.Add(-5 * time.Minute)})},
		{"list given up", "listActive", filter(pgx.NamedArgs{"given_up": true})},
		{"list stuck", "listActive", filter(pgx.NamedArgs{"stuck_at": now.Add(time.Hour)})},
		{"list blocked", "listActive", filter(pgx.NamedArgs{"blocked": true})},
		{"list failed of a user", "listActive", filter(pgx.NamedArgs{"status": "failed", "user_id": "user-3"})},
		{"list by IDs", "listEvents", filter(pgx.NamedArgs{"all_ids": false, "ids": inFlight[:3]})},
		{"list a page", "listEvents", filter(pgx.NamedArgs{"after_seq": rows / 2})},
		{"retry given up", "retryEvents", filter(pgx.NamedArgs{"given_up": true, "status": "failed"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := s.Explain(ctx, tc.statement, tc.args, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (%d rows):\n%s", tc.statement, rows, plan)
			if regexp.MustCompile(`Seq Scan on outbox_events\b[^_]`).MatchString(plan) {
				t.Errorf("%s reads the whole table", tc.statement)
			}
			// A per-user claim steps over other users' pending events (see docs/postgres.md).
			// So does a claim scoped to types, over other types' (docs/adopting.md).
			if removed := rowsRemoved(plan); removed > rows/10 && !strings.HasPrefix(tc.statement, "claimUser") && !strings.HasPrefix(tc.statement, "claimType") {
				t.Errorf("%s reads %d rows only to discard them: an index that walks the table", tc.statement, removed)
			}
		})
	}

	for name, skip := range map[string][]string{"claim": nil, "claim holding a type back": {"activitySnapshot"}} {
		t.Run(name+" under a generic plan", func(t *testing.T) {
			query, args, err := s.ClaimStatement(outbox.ClaimParams{Owner: "relay-b", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 100, SkipTypes: skip})
			if err != nil {
				t.Fatal(err)
			}
			generic, custom := planCosts(t, pool, query, args)
			t.Logf("claim of 100 with %d pending: generic plan cost %.0f, plan for the call %.0f", rows/10, generic, custom)
			// PostgreSQL adopts the generic plan of a statement run many times when it looks
			// no dearer; costed by a tenth of the backlog rather than by its limit, it was
			// compiled with JIT past jit_above_cost on every claim (docs/performance.md).
			if generic > 2*custom {
				t.Errorf("the generic plan is costed at %.0f, %.1f× the plan for the call (%.0f): it is not costed by the claim's limit", generic, generic/custom, custom)
			}
		})
	}

	// The remedy docs/postgres.md gives for per-user processors at scale.
	if _, err := pool.Exec(ctx, `CREATE INDEX outbox_events_pending_by_user ON `+table+
		` (user_id, priority DESC, seq) WHERE status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	plan, err := s.Explain(ctx, "claimUser", with(claim, "user_id", "user-7"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claimUser with the per-user index (%d rows):\n%s", rows, plan)
	if !strings.Contains(plan, "outbox_events_pending_by_user") || rowsRemoved(plan) > rows/100 {
		t.Errorf("the per-user claim does not use the per-user index")
	}

	// And the one docs/adopting.md gives for processors scoped to types.
	if _, err := pool.Exec(ctx, `CREATE INDEX outbox_events_pending_by_type ON `+table+
		` (type, priority DESC, seq) WHERE status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	plan, err = s.Explain(ctx, "claimType", with(claim, "type", "activitySnapshot"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claimType with the per-type index (%d rows):\n%s", rows, plan)
	if !strings.Contains(plan, "outbox_events_pending_by_type") || rowsRemoved(plan) > rows/100 {
		t.Errorf("the claim scoped to a type does not use the per-type index")
	}
}

// ownDatabase creates a database of the test's own, dropped when the test ends, and
// returns a pool on it. VACUUM marks a page all-visible only once no transaction of the
// same database may still need its old row versions: in the shared database, any other
// test (or a second run of the suite) holding a transaction open during the VACUUM
// left the visibility map empty, and the planner then rightly chose a sequential scan
// over an index-only one. Transactions in other databases do not hold it back.
func ownDatabase(t *testing.T, maxConns int32) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := sharedPool(t)
	name := randomName("outbox_plans_")
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database, cfg.MaxConns = name, maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// rowsRemoved adds up the "Rows Removed by Filter" of a plan.
func rowsRemoved(plan string) int {
	total := 0
	for _, line := range strings.Split(plan, "\n") {
		if _, n, ok := strings.Cut(line, "Rows Removed by Filter: "); ok {
			v, _ := strconv.Atoi(strings.TrimSpace(n))
			total += v
		}
	}
	return total
}

func with(a pgx.NamedArgs, k string, v any) pgx.NamedArgs {
	b := pgx.NamedArgs{k: v}
	for k, v := range a {
		if _, set := b[k]; !set {
			b[k] = v
		}
	}
	return b
}

// planCosts prepares query and returns the total cost of its generic plan and of the
// plan made for the arguments named.
func planCosts(t *testing.T, pool *pgxpool.Pool, query string, named pgx.NamedArgs) (generic, custom float64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	positional, args, err := named.RewriteQuery(ctx, conn.Conn(), query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "PREPARE plan_costs AS "+positional); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "DEALLOCATE plan_costs; RESET plan_cache_mode")
	placeholders := make([]string, len(args))
	for i := range args {
		placeholders[i] = "$" + strconv.Itoa(i+1)
	}
	cost := func(mode string) float64 {
		if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		var first string
		// The simple protocol writes the arguments into EXECUTE as literals.
		err := conn.QueryRow(ctx, "EXPLAIN EXECUTE plan_costs("+strings.Join(placeholders, ", ")+")",
			append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...).Scan(&first)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`cost=[0-9.]+\.\.([0-9.]+)`).FindStringSubmatch(first)
		if m == nil {
			t.Fatalf("no cost in %q", first)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	return cost("force_generic_plan"), cost("force_custom_plan")
}
