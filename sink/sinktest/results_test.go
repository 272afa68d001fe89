package sinktest

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func sampleResults() []Result {
	return []Result{
		{Sink: "http", Dedup: true, Rows: []RowResult{
			{Fault: FaultRefused, Verdict: Verdict{Class: Held, Reason: "destination unreachable"}},
			{Fault: FaultTargetRecreated, NotApplicable: "a path | has no lifetime"},
			{Fault: FaultCredentials, Verdict: Verdict{Class: GivenUp}, Want: Verdict{Class: Suspected, Reason: "credentials rejected"}, Problems: []string{"classified"}},
		}},
		{Sink: "kafka", Rows: []RowResult{
			{Fault: FaultRefused, Verdict: Verdict{Class: Held, Reason: "destination unreachable"}},
			{Fault: FaultTargetMissing, Verdict: Verdict{Class: Held, Reason: "target missing", Target: "topic-123"}},
			{Fault: FaultSlowAck, Verdict: Verdict{Class: Retry}, Duplicates: 2},
			{Fault: FaultHostileAnswers, Verdict: Verdict{Class: Retry}, Want: Verdict{Class: Retry}, Problems: []string{`an error's text holds a NUL byte: "x\x00"`}},
		}},
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	const want = `| fault | http | kafka |
|---|---|---|
| destination refuses connections | held: destination unreachable | held: destination unreachable |
| blackholed (TCP accepted, no answer) | — | — |
| destination restarted mid-batch | — | — |
| credentials rejected | FAIL: given up (want suspected: credentials rejected) | — |
| target missing (path, topic, stream, exchange, queue) | — | held: target missing (one target) |
| target deleted, then recreated | n/a: a path \| has no lifetime | — |
| one message too large | — | — |
| one message of a batch rejected | — | — |
| acknowledgement slower than the handler timeout | — | retry, 2 duplicates |
| connection cut after the request was sent | — | — |
| malformed or hostile answers (NUL, invalid UTF-8, huge) | — | FAIL: retry; an error's text holds a NUL byte |
| copies of a delivered event at the destination | exactly one (deduplicated) | at least one |
`
	if got := Table(sampleResults()); got != want {
		t.Errorf("Table =\n%s\nwant\n%s", got, want)
	}
}

func TestResultsRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := sampleResults()
	for _, r := range []Result{in[1], in[0]} { // read back in name order whatever the writing order
		if err := writeResultTo(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	out, err := ReadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("ReadResults = %+v\nwant %+v", out, in)
	}
	if fileName("my sink/v2") != "my_sink_v2.json" {
		t.Errorf("fileName = %q", fileName("my sink/v2"))
	}
}

// TestWriteTable is the table's generator: after the sinks' conformance tests have
// written their results (see TableEnv), it writes table.md beside them and logs it.
// Without TableEnv there is nothing to read, and it says so.
// The fault × sink table in docs/sinks.md is the suite's: built from the results the
// sinks' conformance tests wrote to $OUTBOX_SINKTEST_TABLE, it must equal the table
// between the page's markers, duplicate counts aside (they vary with timing). It runs
// only when OUTBOX_SINKTEST_DOCS says so, after the conformance runs have finished (as
// .ci/run does): "check" compares, "update" rewrites the page's table. It also writes
// table.md beside the results.
func TestDocsTableIsTheSuites(t *testing.T) {
	dir, mode := os.Getenv(TableEnv), os.Getenv("OUTBOX_SINKTEST_DOCS")
	if dir == "" || (mode != "check" && mode != "update") {
		t.Skipf("%s and OUTBOX_SINKTEST_DOCS=check|update are not both set: the sinks' results are not known here (see TableEnv)", TableEnv)
	}
	results, err := ReadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) == 0 {
		t.Fatalf("no results in %s: run the sinks' conformance tests with %s=%s first", dir, TableEnv, dir)
	}
	table := Table(results)
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s/table.md:\n%s", dir, table)

	const page, begin, end = "../../docs/sinks.md", "<!-- sinktest table: begin -->\n", "<!-- sinktest table: end -->"
	doc, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q … %q markers around its table", page, strings.TrimSpace(begin), end)
	}
	want := withoutDuplicateCounts(table)
	if got := string(doc[i+len(begin) : j]); got != want {
		if mode == "update" {
			updated := string(doc[:i+len(begin)]) + want + string(doc[j:])
			if err := os.WriteFile(page, []byte(updated), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s's table differs from the suite's results (rerun with OUTBOX_SINKTEST_DOCS=update to rewrite it):\n--- page\n%s--- suite\n%s", page, got, want)
	}
}

// withoutDuplicateCounts drops ", N duplicate(s)" from a table's cells.
func withoutDuplicateCounts(table string) string {
	return regexp.MustCompile(`, \d+ duplicates?`).ReplaceAllString(table, "")
}
