package cli

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// The flags of scoped log relays, refused before anything is opened: --type on the
// log needs a cursor of its own (not the default one, given or not), --user has no
// meaning on the log, and the cursor flags have none on the table layout (without
// --layout they ask for the log: TestLayoutComesFromTheStore).
func TestScopedLogRelayRefusals(t *testing.T) {
	t.Parallel()
	dsn := "sqlite:" + t.TempDir() + "/none.db"
	relay := func(more ...string) []string {
		return append([]string{"relay", "--dsn", dsn, "--sink", "http://127.0.0.1:1/"}, more...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{relay("--layout=log", "--type", "x"), "--type with --layout=log needs --log-cursor NAME, a cursor of the scope's own"},
		{relay("--layout=log", "--type", "x", "--log-cursor", "relay"), "on the default cursor (relay) it would move the unscoped relays' cursor"},
		{relay("--layout=log", "--user", "u", "--log-cursor", "mine"), "--user with --layout=log: the log relay has no user scope"},
		{relay("--layout=log", "--log-cursor", ""), "--log-cursor: a cursor's name must not be empty"},
		{relay("--layout=log", "--log-cursor", "a", "--log-cursor-from", "a"), `--log-cursor-from "a": name another cursor than --log-cursor (a)`},
		{relay("--layout=table", "--log-cursor", "a"), "--log-cursor is for --layout=log"},
		{relay("--layout=table", "--log-cursor-from", "relay"), "--log-cursor-from is for --layout=log"},
		{[]string{"stats", "--dsn", dsn, "--layout=table", "--log-cursor", "a"}, "--log-cursor is for --layout=log"},
		{[]string{"health", "--dsn", dsn, "--layout=log", "--log-cursor", "a", "--log-cursor", "a"}, "--log-cursor a is given twice"},
		{[]string{"serve", "--dsn", dsn, "--layout=table", "--log-cursor", "a"}, "--log-cursor is for --layout=log"},
		{[]string{"migrate", "--dsn", dsn, "--layout=table", "--drop-log-cursor", "relay"}, "--drop-log-cursor is the event log's: give it with --layout=log"},
	} {
		if r := runEnv(t, Env{}, tc.args...); r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: want exit 2 saying %q, got %v", strings.Join(tc.args, " "), tc.want, r)
		}
	}
}

// Splitting the unscoped log relay into two relays scoped by --type, each with a
// cursor of its own started at the unscoped relay's position (--log-cursor-from):
// each delivers only its types, and between the three every event is delivered once,
// none again. A relay restarted with the same flags keeps its cursor. stats and health
// see each cursor named by --log-cursor; migrate --drop-log-cursor retires the
// unscoped cursor.
func TestScopedLogRelays(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		migrated(t, b)
		migrate := []string{"migrate", "--dsn", b.dsn, "--layout=log"}
		relay := []string{"relay", "--dsn", b.dsn, "--layout=log", "--once"}
		if b.name == "postgres" { // a cursor per shard, each copied
			migrate = append(migrate, "--shards", "2")
			relay = append(relay, "--log-concurrency", "2")
		}
		if r := runEnv(t, Env{}, migrate...); r.code != 0 {
			t.Fatalf("migrate --layout=log: %v", r)
		}
		sink := newAcceptAll(t)
		relay = append(relay, "--sink", sink.srv.URL)
		appendLog := func(lines string) []string {
			t.Helper()
			r := runEnv(t, Env{Stdin: strings.NewReader(lines)}, "enqueue", "--dsn", b.dsn, "--layout=log", "--jsonl")
			if r.code != 0 {
				t.Fatalf("enqueue --layout=log: %v", r)
			}
			return ids(r)
		}
		all := appendLog(`{"type":"order.created","entity_id":"o-1"}
{"type":"invoice.sent","entity_id":"i-1"}
`)
		if r := runEnv(t, Env{}, relay...); r.code != 0 || !strings.HasPrefix(r.stdout, "read 2 events from the log: 2 delivered") {
			t.Fatalf("the unscoped relay --once: %v", r)
		}
		all = append(all, appendLog(`{"type":"order.created","entity_id":"o-2"}
{"type":"invoice.sent","entity_id":"i-2"}
{"type":"order.created","entity_id":"o-3"}
`)...)

		if r := runEnv(t, Env{}, slices.Concat(relay, []string{"--type", "order.created", "--log-cursor", "orders", "--log-cursor-from", "nobody"})...); r.code != ExitUsage ||
			!strings.Contains(r.stderr, "--log-cursor-from nobody: the log has no cursor nobody") {
			t.Errorf("--log-cursor-from a cursor that does not exist: want exit 2, got %v", r)
		}
		orders := slices.Concat(relay, []string{"--type", "order.created", "--log-cursor", "orders", "--log-cursor-from", "relay"})
		r := runEnv(t, Env{}, orders...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "read 3 events from the log: 2 delivered") ||
			!strings.Contains(r.stderr, "log cursor created at another's position") {
			t.Fatalf("the orders relay --once: want the 3 events since the unscoped relay's position read, 2 delivered, got %v", r)
		}

		// Each cursor's wait: the unscoped one has not moved, orders has passed all,
		// invoices does not exist yet: what the log still holds, which is more than the
		// unscoped relay has not passed (SQLite's --once trimmed all but one delivered
		// event; PostgreSQL's partitions are not full enough to be emptied): that is the
		// redelivery --log-cursor-from avoids.
		r = runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log", "--json", "--log-cursor", "relay", "--log-cursor", "orders", "--log-cursor", "invoices")
		var st struct{ Log logJSON }
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 {
			t.Fatalf("stats --json with three cursors: %v (%v)", r, err)
		}
		waits := map[string]int64{}
		for _, c := range st.Log.Cursors {
			waits[c.Cursor] = c.EventsWaiting
		}
		if len(st.Log.Cursors) != 3 || waits["relay"] != 3 || waits["orders"] != 0 || waits["invoices"] <= 3 ||
			st.Log.EventsWaiting != 3+waits["invoices"] {
			t.Errorf("stats --json: want relay 3, orders 0, invoices more than 3 (no cursor yet: the whole log), their sum in all, got %+v", st.Log)
		}
		r = runEnv(t, Env{}, "stats", "--dsn", b.dsn, "--layout=log", "--log-cursor", "relay", "--log-cursor", "orders")
		if r.code != 0 || !strings.Contains(r.stdout, "on the log (not counted above): 3 waiting for the log relay · oldest waiting ") ||
			!strings.Contains(r.stdout, "on the log (not counted above): 0 waiting for the log relay of cursor orders · oldest waiting -\n") {
			t.Errorf("stats with two cursors: want a line each, got %v", r)
		}

		invoices := slices.Concat(relay, []string{"--type", "invoice.sent", "--log-cursor", "invoices", "--log-cursor-from", "relay"})
		if r := runEnv(t, Env{}, invoices...); r.code != 0 || !strings.HasPrefix(r.stdout, "read 3 events from the log: 1 delivered") {
			t.Fatalf("the invoices relay --once: want 3 read, 1 delivered, got %v", r)
		}
		if r := runEnv(t, Env{}, invoices...); r.code != 0 || !strings.HasPrefix(r.stdout, "read 0 events from the log") ||
			!strings.Contains(r.stderr, "log cursor exists: --log-cursor-from ignored") {
			t.Errorf("the invoices relay again: want its own cursor kept, nothing read, got %v", r)
		}
		sink.mu.Lock()
		for _, id := range all {
			if sink.keys[id] != 1 {
				t.Errorf("event %s delivered %d times, want once", id, sink.keys[id])
			}
		}
		if len(sink.keys) != len(all) {
			t.Errorf("the sink got %d events, want %d", len(sink.keys), len(all))
		}
		sink.mu.Unlock()

		// Retiring the unscoped cursor.
		r = runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log", "--drop-log-cursor", "relay")
		if r.code != 0 || !strings.HasSuffix(r.stdout, ": dropped the log cursor relay\n") {
			t.Errorf("migrate --drop-log-cursor relay: %v", r)
		}
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log", "--drop-log-cursor", "relay"); r.code != ExitFailure ||
			!strings.Contains(r.stderr, "--drop-log-cursor relay: the log has no cursor relay") {
			t.Errorf("migrate --drop-log-cursor of a cursor dropped: want exit 1, got %v", r)
		}

		// One more event, 20 minutes on: both scoped cursors are behind (each counts
		// every type it has not passed), and health names them.
		appendLog(`{"type":"order.created","entity_id":"o-4"}` + "\n")
		later := Env{Clock: outboxtest.NewClock(time.Now().Add(20 * time.Minute))}
		r = runEnv(t, later, "health", "--dsn", b.dsn, "--layout=log", "--log-cursor", "orders", "--log-cursor", "invoices")
		if r.code != ExitFailure || !regexp.MustCompile(`(?m)^  log_behind    the oldest of 1 events waiting on the log for cursor (orders|invoices) has waited 20m(\d+s)?, above 15m: .* \(cursors behind: orders, invoices\)$`).MatchString(r.stdout) {
			t.Errorf("health with two cursors behind: want exit 1, one log_behind naming both, got %v", r)
		}
		if r := runEnv(t, later, orders...); r.code != 0 {
			t.Errorf("the orders relay, its source dropped: want it to go on from its own cursor, got %v", r)
		}
		r = runEnv(t, later, "health", "--dsn", b.dsn, "--layout=log", "--log-cursor", "orders", "--log-cursor", "invoices", "--json")
		var h struct {
			Alerts []outbox.Alert
		}
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != ExitFailure || len(h.Alerts) != 1 ||
			!strings.Contains(h.Alerts[0].Message, "for cursor invoices") || strings.Contains(h.Alerts[0].Message, "cursors behind") {
			t.Errorf("health after the orders relay ran: want invoices alone behind (it passes o-4 by only once it reads it), got %v (%v)", r, err)
		}
	})
}
