package sinktest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// TableEnv is the environment variable that, naming a directory, makes Run write each
// sink's results there as <sink name>.json, for Table:
//
//	OUTBOX_SINKTEST_TABLE=/tmp/matrix go test -count=1 -run Conformance ./sink/...
//	OUTBOX_SINKTEST_TABLE=/tmp/matrix go test -count=1 -run TestWriteTable ./sink/sinktest
//
// The second command reads the files and writes the markdown table to
// /tmp/matrix/table.md. (An environment variable rather than a flag: `go test
// ./sink/... -args -flag` would fail in every package that does not define it.)
const TableEnv = "OUTBOX_SINKTEST_TABLE"

// Result is what Run found for one sink: one RowResult per row that ran.
type Result struct {
	Sink  string      `json:"sink"`
	Dedup bool        `json:"dedup"`
	Rows  []RowResult `json:"rows"`
}

// RowResult is one row's outcome.
type RowResult struct {
	Fault Fault `json:"fault"`
	// NotApplicable is the harness's reason when the row does not apply.
	NotApplicable string `json:"not_applicable,omitempty"`
	// Verdict is what the sink did: in FaultTooLarge and FaultOneRejected, the
	// classification of the event at fault; otherwise that of the first event of the
	// batch not delivered, or Delivered when every one was.
	Verdict Verdict `json:"verdict"`
	// Want is the expectation the verdict was checked against.
	Want Verdict `json:"want"`
	// Error is the start of the error the verdict was made from.
	Error string `json:"error,omitempty"`
	// Duplicates counts the copies, beyond the first, of the row's delivered events
	// that the destination held at the end.
	Duplicates int `json:"duplicates"`
	// Note says something about how the row ran that is not a failure.
	Note string `json:"note,omitempty"`
	// Problems says why the row failed; empty when it passed.
	Problems []string `json:"problems,omitempty"`
}

// Passed reports whether the row met every check.
func (r RowResult) Passed() bool { return len(r.Problems) == 0 }

// Cell is the row as the table shows it: "held: destination unreachable",
// "retry, 1 duplicate", "n/a: <reason>", or "FAIL: …" with the verdict expected or
// the first check that failed.
func (r RowResult) Cell() string {
	switch {
	case r.NotApplicable != "":
		return "n/a: " + r.NotApplicable
	case !r.Passed() && !r.Want.matches(r.Verdict):
		return fmt.Sprintf("FAIL: %s (want %s)", r.Verdict, r.Want)
	case !r.Passed():
		// Classified as expected, but a check failed: name the first, without the
		// quoted text that follows its colon.
		problem, _, _ := strings.Cut(r.Problems[0], ": ")
		return fmt.Sprintf("FAIL: %s; %s", r.Verdict, problem)
	}
	s := r.Verdict.String()
	switch r.Duplicates {
	case 0:
	case 1:
		s += ", 1 duplicate"
	default:
		s += fmt.Sprintf(", %d duplicates", r.Duplicates)
	}
	return s
}

// fileName is the results file of a sink named name: its name made safe for a path.
func fileName(name string) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	return safe + ".json"
}

// keepResults is false in this package's own tests: their stand-in sinks are not
// sinks of the table.
var keepResults = true

// writeResult writes res to the directory TableEnv names; nothing when it is unset.
func writeResult(res Result) error {
	if dir := os.Getenv(TableEnv); dir != "" && keepResults {
		return writeResultTo(dir, res)
	}
	return nil
}

func writeResultTo(dir string, res Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, fileName(res.Sink)), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// ReadResults reads the results files Run wrote to dir (see TableEnv), ordered by
// sink name.
func ReadResults(dir string) ([]Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	var out []Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read results: %w", err)
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("read results %s: %w", p, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.Sink, b.Sink) })
	return out, nil
}

// Table formats results as a markdown table, fault × sink → what happens: one line
// per Fault (in the order of Faults), one column per result, and a last line saying
// how many copies of an event the destination ends up with. A row a sink did not
// run shows "—".
func Table(results []Result) string {
	var b strings.Builder
	line := func(cells ...string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + escapeCell(c) + " |")
		}
		b.WriteString("\n")
	}
	head, rule := []string{"fault"}, []string{"---"}
	for _, r := range results {
		head, rule = append(head, r.Sink), append(rule, "---")
	}
	line(head...)
	b.WriteString("|" + strings.Join(rule, "|") + "|\n")
	for _, f := range faults {
		cells := []string{f.Description()}
		for _, r := range results {
			cell := "—"
			if i := slices.IndexFunc(r.Rows, func(row RowResult) bool { return row.Fault == f }); i >= 0 {
				cell = r.Rows[i].Cell()
			}
			cells = append(cells, cell)
		}
		line(cells...)
	}
	cells := []string{"copies of a delivered event at the destination"}
	for _, r := range results {
		if r.Dedup {
			cells = append(cells, "exactly one (deduplicated)")
		} else {
			cells = append(cells, "at least one")
		}
	}
	line(cells...)
	return b.String()
}

// escapeCell keeps a cell on one line and inside its column.
func escapeCell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}
