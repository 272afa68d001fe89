package mysql_test

import (
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

// digits is 0–9; joined six times with itself it numbers up to a million rows.
const digits = `(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
	UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)`

// populate fills the table with completed rows, then pending rows, straight in SQL,
// in seq order, and analyzes it.
func populate(tb testing.TB, db *sql.DB, table string, pending, completed int, at time.Time) {
	tb.Helper()
	us := at.UnixMicro()
	_, err := db.Exec(`
INSERT INTO `+table+` (id, type, entity_id, user_id, status, priority, ordering_key, payload,
    created_at, updated_at, next_attempt_at, completed_at, attempts)
SELECT UNHEX(REPLACE(UUID(), '-', '')), ELT(1 + i % 3, 'order.created', 'order.paid', 'order.shipped'),
       CONCAT('entity-', i), CONCAT('user-', i % 1000), IF(i <= ?, 'completed', 'pending'),
       IF(i % 10 = 0, 10, 0), CONCAT('entity-', i), '{"kind":"weight","quantity":72.5}',
       ?, ?, IF(i <= ?, NULL, ?), IF(i <= ?, ?, NULL), IF(i <= ?, 1, 0)
FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * d.d + 10000 * e.d + 100000 * f.d AS i
      FROM `+digits+` a, `+digits+` b, `+digits+` c, `+digits+` d, `+digits+` e, `+digits+` f) n
WHERE i <= ?
ORDER BY i`, completed, us, us, completed, us, completed, us, completed, completed+pending)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := db.Exec(`ANALYZE TABLE ` + table); err != nil {
		tb.Fatal(err)
	}
}

// explain returns the plan rows of query, one map of EXPLAIN's columns per row.
func explain(t *testing.T, db *sql.DB, query string, args []any) []map[string]string {
	t.Helper()
	rows, err := db.Query("EXPLAIN "+query, args...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var plan []map[string]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = vals[i].String
		}
		plan = append(plan, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// The store's statements, planned on a large table whose events are mostly completed
// (as retention keeps them), with some pending, in flight, retrying, given up and
// blocked: none may read the whole table or a whole index, and each reads the index
// range of its state. (The counts for everyone read the whole range of each state,
// index only, as PostgreSQL's do: their cost follows the events in that state.) OUTBOX_MYSQL_PLANS_ROWS sets the size (default 100,000; the plans at
// 1,000,000 are the same, see docs/mysql.md); run with -v to read the plans.
func TestPlansUseTheIndexes(t *testing.T) {
	t.Parallel()
	rows := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_MYSQL_PLANS_ROWS")); err == nil && v > 0 {
		rows = v
	}
	db := openDB(t, 2, func(c *gomysql.Config) { c.InterpolateParams = true }) // EXPLAIN the statements as the server plans them with values
	s := newStore(t, db, mysql.Config{})
	table := "`" + s.Config().Table + "`"
	now := time.Now()
	at := now.Add(-time.Hour).UnixMicro()
	populate(t, db, table, rows/10, rows-rows/10, now.Add(-time.Hour))
	// Some of the pending ones in flight, retrying, given up (with a later event of
	// their key waiting behind them).
	for _, q := range []string{
		`UPDATE ` + table + ` SET status = 'processing', attempts = 1, lease_owner = 'relay-a',
		    lease_expires_at = ? + 60000000 WHERE seq % 100 = 1 AND status = 'pending'`,
		`UPDATE ` + table + ` SET status = 'failed', attempts = 1, next_attempt_at = ? + (seq % 7 - 3) * 60000000,
		    last_error = '503' WHERE seq % 100 = 2 AND status = 'pending'`,
		`UPDATE ` + table + ` SET status = 'failed', attempts = 5, next_attempt_at = NULL, last_error = '400'
		    WHERE seq % 1000 = 3 AND status = 'pending' AND ? > 0`,
		`UPDATE ` + table + ` SET ordering_key = CONCAT('entity-', seq - 1) WHERE seq % 1000 = 4 AND status = 'pending' AND ? > 0`,
		`ANALYZE TABLE ` + table,
	} {
		var args []any
		if strings.Contains(q, "?") {
			args = append(args, at)
		}
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	someIDs := func(status string, n int) [][]byte {
		rows, err := db.Query(`SELECT id FROM `+table+` WHERE status = ? LIMIT ?`, status, n)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ids [][]byte
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	inFlight := someIDs("processing", 100)
	nowUs := now.UnixMicro()
	claim := map[string]any{"now": nowUs, "limit": 100, "default_max": 5, "skip_given_up": false}
	user := func(a map[string]any) map[string]any {
		b := map[string]any{"user_id": "user-42"}
		for k, v := range a {
			b[k] = v
		}
		return b
	}
	skip := func(a map[string]any) map[string]any {
		b := map[string]any{"skip_types": []string{"order.paid"}}
		for k, v := range a {
			b[k] = v
		}
		return b
	}
	stats := map[string]any{"now": nowUs, "stale_before": nowUs - 3600_000_000}
	window := map[string]any{"since": nowUs - 15*60_000_000}
	seqs := []int64{int64(rows - 5), int64(rows - 3)}
	tests := []struct {
		name string
		args map[string]any
		keys []string // indexes the statement may read
		// ordered: the locking read walks an index in delivery order and stops at its
		// limit. A filesort would read, and lock, every match before cutting.
		ordered bool
		list    *outbox.Filter // List's statement for this filter, in place of a named one
	}{
		{"expiredLeases", claim, []string{"due"}, false, nil},
		{"expiredLeases", user(claim), []string{"due", "counts"}, false, nil},
		{"pendingHeads", claim, []string{"claim", "open_key", "key_in_flight"}, true, nil},
		{"pendingHeads", user(claim), []string{"claim", "counts", "open_key", "key_in_flight"}, true, nil},
		{"retryHeads", claim, []string{"due", "claim", "open_key", "key_in_flight"}, false, nil},
		{"retryHeads", user(claim), []string{"due", "claim", "counts", "open_key", "key_in_flight"}, true, nil},
		// A claim holding a type back reads as the usual one does.
		{"expiredLeases", skip(claim), []string{"due"}, false, nil},
		{"pendingHeads", skip(claim), []string{"claim", "open_key", "key_in_flight"}, true, nil},
		{"retryHeads", skip(claim), []string{"due", "claim", "open_key", "key_in_flight"}, false, nil},
		{"claimEvents", map[string]any{"now": nowUs, "owner": "o", "lease_until": nowUs, "seqs": seqs}, []string{"PRIMARY"}, false, nil},
		{"completeEvents", map[string]any{"now": nowUs, "owner": "relay-a", "ids": inFlight}, []string{"id_key", "due"}, false, nil}, // the IDs, or the in-flight range of due
		{"deleteCompleted", map[string]any{"before": nowUs, "limit": 1000}, []string{"due"}, false, nil},
		{"countActive", stats, []string{"counts"}, false, nil},
		{"countActive", user(stats), []string{"counts"}, false, nil},
		{"countCompleted", stats, []string{"counts"}, false, nil},
		{"countCompleted", user(stats), []string{"counts"}, false, nil},
		{"countBlocked", stats, []string{"due", "open_key"}, false, nil},
		{"countBlocked", user(stats), []string{"due", "open_key", "counts"}, false, nil},
		// The window's completions from the completed range of due, its failures from
		// failed_at; per user, the completions of the window are looked up for their user.
		{"countRecent", window, []string{"due", "failed_at"}, false, nil},
		{"countRecent", user(window), []string{"due", "failed_at", "counts"}, false, nil},
		// The dashboard's timeline and the head of a key.
		{"timelineCompleted", map[string]any{"since": nowUs - 3600_000_000, "until": nowUs}, []string{"due"}, false, nil},
		{"timelineFailed", map[string]any{"since": nowUs - 3600_000_000, "until": nowUs}, []string{"failed_at"}, false, nil},
		{"keyHead", map[string]any{"key": "entity-1004"}, []string{"open_key"}, true, nil},
		{"maxSeq", nil, nil, false, nil}, // "Select tables optimized away": the end of the primary key
		// List with the operator's filters for stuck and blocked events: the in-flight or
		// waiting range of an index that leads with status.
		{"list stuck", nil, []string{"due", "claim"}, false, &outbox.Filter{StuckAt: now}},
		{"list stuck", map[string]any{"user_id": "user-42"}, []string{"due", "counts"}, false, &outbox.Filter{StuckAt: now, UserID: "user-42"}},
		{"list blocked", nil, []string{"due", "claim", "counts", "open_key"}, false, &outbox.Filter{Blocked: true}},
	}
	for _, tc := range tests {
		_, perUser := tc.args["user_id"]
		_, skipping := tc.args["skip_types"]
		t.Run(fmt.Sprintf("%s/user=%v/skip=%v", tc.name, perUser, skipping), func(t *testing.T) {
			var query string
			var args []any
			if tc.list != nil {
				query, args = s.ListStatement(*tc.list)
			} else {
				query, args = s.Statement(tc.name, tc.args)
			}
			plan := explain(t, db, query, args)
			var lines []string
			for _, row := range plan {
				lines = append(lines, fmt.Sprintf("%s %s type=%s key=%s rows=%s %s", row["select_type"], row["table"], row["type"], row["key"], row["rows"], row["Extra"]))
				if row["table"] == "" { // nothing read: optimized away
					continue
				}
				// The paused types: a handful of rows, read whole once per statement.
				if strings.HasSuffix(row["table"], "_paused_types") {
					continue
				}
				if tc.ordered && row["select_type"] == "PRIMARY" && strings.Contains(row["Extra"], "filesort") {
					t.Errorf("%s sorts its matches instead of reading them in order: %s", tc.name, row["Extra"])
				}
				// ALL reads the table, index a whole index.
				if row["type"] == "ALL" || row["type"] == "index" || row["key"] == "" {
					t.Errorf("%s reads %s without an index range (type %s, key %q)", tc.name, row["table"], row["type"], row["key"])
				}
				// MariaDB names a rowid filter's index after the one it reads: "open_key|counts".
				for key := range strings.SplitSeq(row["key"], "|") {
					if key != "" && !slices.Contains(tc.keys, key) {
						t.Errorf("%s reads index %s, want one of %v", tc.name, key, tc.keys)
					}
				}
			}
			t.Logf("%s\n%s", tc.name, strings.Join(lines, "\n"))
		})
	}
}
