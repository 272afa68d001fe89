package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// enqueue runs `outbox enqueue` on s with stdin.
func enqueue(t *testing.T, s *sqlStore, stdin string, args ...string) result {
	t.Helper()
	return runEnv(t, Env{Stdin: strings.NewReader(stdin)}, append([]string{"enqueue", "--dsn", s.dsn}, args...)...)
}

// count is how many events the outbox holds.
func (s *sqlStore) count(t *testing.T) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow("SELECT count(*) FROM outbox_events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// ids are the IDs the command printed.
func ids(r result) []string { return strings.Fields(r.stdout) }

// One event from flags, every field set, written as the library writes it and
// delivered by the relay, on every store.
func TestEnqueueOneEventFromFlags(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			before := time.Now().Add(-time.Second)
			r := enqueue(t, s, "", "--type", "order.created", "--entity", "order-1", "--user", "alice",
				"--ordering-key", "order-1", "--priority", "7", "--max-attempts", "3", "--new-record",
				"--metadata", "source=backfill", "--metadata", "note=a=b", "--payload", ` {"total":42.5} `)
			if r.code != 0 || len(ids(r)) != 1 || r.stderr != "" {
				t.Fatalf("enqueue: %v", r)
			}
			e, err := s.store.Get(context.Background(), ids(r)[0])
			if err != nil {
				t.Fatal(err)
			}
			id, _ := uuid.Parse(e.ID)
			if id.Version() != 7 || e.Type != "order.created" || e.EntityID != "order-1" || e.UserID != "alice" ||
				e.OrderingKey != "order-1" || e.Priority != 7 || e.MaxAttempts != 3 || !e.IsNewRecord ||
				!maps.Equal(e.Metadata, map[string]string{"source": "backfill", "note": "a=b"}) ||
				string(e.Payload) != `{"total":42.5}` || e.Status != outbox.StatusPending || e.CreatedAt.Before(before) {
				t.Fatalf("written: %+v", e)
			}
			rec := newRecorder(t, 0)
			if r := relayOnce(t, s.dsn, rec.url); r.code != 0 || len(rec.envelopes()) != 1 || rec.envelopes()[0].ID != e.ID {
				t.Fatalf("relay --once: %v, delivered %+v", r, rec.envelopes())
			}
		})
	}
}

// The payload comes from --payload, a file, or stdin (--payload-file -), its
// surrounding white space trimmed; without one the event has none; --id is kept.
func TestEnqueuePayloadSources(t *testing.T) {
	t.Parallel()
	s := newSQLStore(t, "sqlite")
	file := filepath.Join(t.TempDir(), "order.json")
	if err := os.WriteFile(file, []byte("{\n  \"total\": 42.5\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	given := uuid.NewString()
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"flag", "", []string{"--payload", "[1, 2]\n"}, "[1, 2]"},
		{"file", "", []string{"--payload-file", file}, "{\n  \"total\": 42.5\n}"},
		{"stdin", "\"a string\"\n", []string{"--payload-file", "-"}, `"a string"`},
		{"none", "ignored", nil, ""},
		{"given ID", "", []string{"--id", strings.ToUpper(given)}, ""},
	} {
		r := enqueue(t, s, tc.stdin, append([]string{"--type", "t", "--entity", tc.name}, tc.args...)...)
		if r.code != 0 || len(ids(r)) != 1 {
			t.Fatalf("%s: %v", tc.name, r)
		}
		e, err := s.store.Get(context.Background(), ids(r)[0])
		if err != nil || string(e.Payload) != tc.want || e.EntityID != tc.name {
			t.Errorf("%s: %+v, %v; want payload %q", tc.name, e, err, tc.want)
		}
		if tc.name == "given ID" && (ids(r)[0] != given || e.ID != given) {
			t.Errorf("--id %s: printed %s, stored %s; want the canonical spelling", strings.ToUpper(given), ids(r)[0], e.ID)
		}
	}
	// An ID already in the outbox is refused, and nothing written.
	r := enqueue(t, s, "", "--type", "t", "--entity", "again", "--id", given)
	if r.code != ExitUsage || !strings.Contains(r.stderr, given+" is already used by another event") || !strings.HasSuffix(r.stderr, "(nothing written)\n") {
		t.Errorf("the same --id again: %v", r)
	}
	if n := s.count(t); n != 5 {
		t.Errorf("%d events, want 5", n)
	}
}

// jsonLines returns n lines of events, a blank line among them, the first with an ID.
func jsonLines(n int, firstID string) string {
	var b strings.Builder
	for i := range n {
		line := map[string]any{"type": "order.created", "entity_id": fmt.Sprintf("order-%04d", i), "user_id": "alice",
			"priority": i % 3, "metadata": map[string]string{"line": fmt.Sprint(i + 1)}, "payload": map[string]int{"n": i}}
		if i == 0 {
			line["id"], line["ordering_key"], line["is_new_record"], line["max_attempts"] = firstID, "k", true, 2
		}
		j, _ := json.Marshal(line)
		b.Write(j)
		b.WriteString("\n")
		if i == 0 {
			b.WriteString("\n") // blank lines are skipped
		}
	}
	return b.String()
}

// Many events from JSON lines, more than one INSERT's worth, written in one
// transaction, their IDs printed in input order; on every store.
func TestEnqueueJSONLines(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			const n = 1201 // three INSERTs of at most 500
			first := uuid.NewString()
			r := enqueue(t, s, jsonLines(n, first), "--jsonl")
			if r.code != 0 || len(ids(r)) != n || ids(r)[0] != first {
				t.Fatalf("enqueue --jsonl: exit %d, %d IDs, stderr %q", r.code, len(ids(r)), r.stderr)
			}
			events, err := s.store.List(context.Background(), outbox.Filter{Limit: 2 * n})
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != n {
				t.Fatalf("%d events, want %d", len(events), n)
			}
			for i, e := range events {
				if e.ID != ids(r)[i] || e.EntityID != fmt.Sprintf("order-%04d", i) || e.Metadata["line"] != fmt.Sprint(i+1) ||
					string(e.Payload) != fmt.Sprintf(`{"n":%d}`, i) || e.Priority != i%3 {
					t.Fatalf("event %d: %+v (printed %s)", i, e, ids(r)[i])
				}
			}
			if e := events[0]; e.OrderingKey != "k" || !e.IsNewRecord || e.MaxAttempts != 2 {
				t.Errorf("first event %+v: want its key, new record, max attempts", e)
			}
		})
	}
}

// All or nothing: a bad line anywhere, or an ID the store refuses in the last of
// several INSERTs, and nothing is written; the line is named. On every store.
func TestEnqueueJSONLinesAllOrNothing(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSQLStore(t, kind)
			taken := uuid.NewString()
			if r := enqueue(t, s, "", "--type", "t", "--entity", "e", "--id", taken); r.code != 0 {
				t.Fatal(r)
			}
			lines := jsonLines(1100, uuid.NewString())
			r := enqueue(t, s, lines+`{"type":"t","entity_id":"`+strings.Repeat("e", 256)+`"}`+"\n", "--jsonl")
			if r.code != ExitUsage || r.stderr != "outbox enqueue: line 1102: entity_id is 256 bytes, over the limit of 255\n" {
				t.Errorf("a bad last line: %v", r)
			}
			r = enqueue(t, s, lines+`{"id":"`+taken+`","type":"t","entity_id":"e"}`+"\n", "--jsonl")
			if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "outbox enqueue: line 1102: ") ||
				!strings.Contains(r.stderr, taken) || !strings.Contains(r.stderr, "is already used by another event") || !strings.HasSuffix(r.stderr, "(nothing written)\n") {
				t.Errorf("an ID already used, on the last line: %v", r)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want no ID printed", r.stdout)
			}
			if n := s.count(t); n != 1 {
				t.Errorf("%d events in the outbox, want the 1 written before: nothing of the refused runs", n)
			}
		})
	}
}

// Bad input is refused before anything is written: exit 2, one line naming the flag,
// or the line and key, and the problem.
func TestEnqueueRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := newSQLStore(t, "sqlite")
	bigFile := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(bigFile, []byte(`"`+strings.Repeat("x", outbox.DefaultMaxPayloadBytes)+`"`), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	one := []string{"--type", "t", "--entity", "e"}
	with := func(args ...string) []string { return append(slices.Clone(one), args...) }
	ok := `{"type":"t","entity_id":"e"}` + "\n"
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  string // the whole line, after "outbox enqueue: "
	}{
		// The page's examples, word for word.
		{"no type", []string{"--entity", "e"}, "", "--type must not be empty"},
		{"entity over 255 bytes", []string{"--jsonl"}, ok + ok + `{"type":"t","entity_id":"` + strings.Repeat("e", 300) + `"}`, "line 3: entity_id is 300 bytes, over the limit of 255"},
		{"unknown key", []string{"--jsonl"}, strings.Repeat(ok, 6) + `{"type":"t","entity":"e"}`, `line 7: unknown key "entity" (want id, type, entity_id, user_id, ordering_key, priority, max_attempts, is_new_record, metadata, payload)`},
		{"payload not JSON", with("--payload", "{nope"), "", "the payload is not valid JSON"},
		// Flags.
		{"no entity", []string{"--type", "t"}, "", "--entity must not be empty"},
		{"type over 255 bytes", []string{"--type", strings.Repeat("t", 256), "--entity", "e"}, "", "--type is 256 bytes, over the limit of 255"},
		{"user over 255 bytes", with("--user", strings.Repeat("u", 256)), "", "--user is 256 bytes, over the limit of 255"},
		{"key over 255 bytes", with("--ordering-key", strings.Repeat("k", 256)), "", "--ordering-key is 256 bytes, over the limit of 255"},
		{"type with a NUL", []string{"--type", "a\x00b", "--entity", "e"}, "", "--type contains a NUL byte or invalid UTF-8"},
		{"ID not a UUID", with("--id", "42"), "", `--id "42" is not a UUID`},
		{"negative max attempts", with("--max-attempts", "-1"), "", "--max-attempts must not be negative, got -1"},
		{"payload over 1 MiB", with("--payload-file", bigFile), "", "the payload is 1048577 bytes, over the limit of 1048576"},
		{"payload not UTF-8", with("--payload", "\"\xff\""), "", "the payload is not valid UTF-8"},
		{"both payloads", with("--payload", "1", "--payload-file", "-"), "", "give --payload or --payload-file, not both"},
		{"empty payload file", with("--payload-file", emptyFile), "", "--payload-file: " + emptyFile + " is empty (leave the flag out for an event without a payload)"},
		{"empty stdin payload", with("--payload-file", "-"), "", "--payload-file: stdin is empty (leave the flag out for an event without a payload)"},
		{"missing payload file", with("--payload-file", "/nonexistent/x.json"), "", "--payload-file: open /nonexistent/x.json: no such file or directory"},
		{"metadata without =", with("--metadata", "source"), "", `--metadata "source": want key=value`},
		{"metadata empty key", with("--metadata", "=v"), "", `--metadata "=v": the key is empty`},
		{"metadata key twice", with("--metadata", "a=1", "--metadata", "a=2"), "", `--metadata: the key "a" is given twice`},
		{"metadata not UTF-8", with("--metadata", "a=\xff"), "", `--metadata entry "a" contains a NUL byte or invalid UTF-8`},
		{"stray argument", with("extra"), "", `unexpected argument "extra" (see 'outbox enqueue --help')`},
		{"jsonl with flags", []string{"--jsonl", "--type", "t", "--priority", "2"}, ok, "--jsonl reads every field from stdin; --type, --priority do not apply"},
		// Lines.
		{"line not JSON", []string{"--jsonl"}, ok + `{"type":"t","entity_id":"e","payload":{"a":}}`, `line 2: not JSON: invalid character '}' looking for beginning of value`},
		{"line not an object", []string{"--jsonl"}, "[1]", "line 1: want a JSON object, got a JSON array"},
		{"line cut short", []string{"--jsonl"}, `{"type":"t"`, "line 1: not JSON: the object is cut short"},
		{"two objects on a line", []string{"--jsonl"}, ok + `{"type":"t","entity_id":"e"} {}`, "line 2: more than one JSON value on the line (want one object per line)"},
		{"priority a string", []string{"--jsonl"}, `{"type":"t","entity_id":"e","priority":"high"}`, "line 1: priority: want an integer, got a JSON string"},
		{"new record a string", []string{"--jsonl"}, `{"type":"t","entity_id":"e","is_new_record":"yes"}`, "line 1: is_new_record: want true or false, got a JSON string"},
		{"metadata a number", []string{"--jsonl"}, `{"type":"t","entity_id":"e","metadata":{"count":1}}`, "line 1: metadata: every value must be a string, got a JSON number"},
		{"metadata an array", []string{"--jsonl"}, `{"type":"t","entity_id":"e","metadata":["a"]}`, "line 1: metadata: want an object of strings, got a JSON array"},
		{"line without type", []string{"--jsonl"}, ok + "\n\n" + `{"entity_id":"e"}`, "line 4: type must not be empty"},
		{"line with a bad ID", []string{"--jsonl"}, `{"id":"x","type":"t","entity_id":"e"}`, `line 1: id "x" is not a UUID`},
		{"ID twice", []string{"--jsonl"}, `{"id":"0190f4c2-7d1e-7cc1-a3e4-5b6a7c8d9e0f","type":"t","entity_id":"e"}` + "\n" + ok +
			`{"id":"0190F4C2-7D1E-7CC1-A3E4-5B6A7C8D9E0F","type":"t","entity_id":"e"}`, "line 3: id 0190F4C2-7D1E-7CC1-A3E4-5B6A7C8D9E0F is also on line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := enqueue(t, s, tc.stdin, tc.args...)
			if r.code != ExitUsage || r.stderr != "outbox enqueue: "+tc.want+"\n" || r.stdout != "" {
				t.Errorf("%v\nwant exit 2 and the one line %q", r, "outbox enqueue: "+tc.want)
			}
		})
	}
	if n := s.count(t); n != 0 {
		t.Fatalf("%d events written by refused runs, want none", n)
	}
}

// No events on stdin writes nothing and says so; it is not an error.
func TestEnqueueNoLines(t *testing.T) {
	t.Parallel()
	s := newSQLStore(t, "sqlite")
	r := enqueue(t, s, "\n\n", "--jsonl")
	if r.code != 0 || r.stdout != "" || r.stderr != "outbox enqueue: no events on stdin: nothing written\n" {
		t.Fatalf("%v", r)
	}
}
