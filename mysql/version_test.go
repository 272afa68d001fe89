package mysql

import (
	"strings"
	"testing"
)

func TestCheckVersionNeedsSkipLocked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		ok      bool
	}{
		{"10.11.19-MariaDB-0+deb12u1", true},
		{"10.6.0-MariaDB", true},
		{"11.4.2-MariaDB-log", true},
		{"10.5.23-MariaDB", false},
		{"8.0.36", true},
		{"8.0.1", true},
		{"8.0.0-dmr", false},
		{"8.4.3-commercial", true},
		{"9.1.0", true},
		{"5.7.44-log", false},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			err := checkVersion(tc.version)
			if tc.ok != (err == nil) {
				t.Fatalf("checkVersion(%q) = %v, want ok %v", tc.version, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "SKIP LOCKED") {
				t.Fatalf("the error does not say why: %v", err)
			}
		})
	}
}

func TestSplitStatementsDropsCommentsAndCutsAtSemicolons(t *testing.T) {
	t.Parallel()
	got := splitStatements("-- a comment\nCREATE TABLE a (\n  x INT -- inline\n);\n\n-- another\nCREATE INDEX i ON a (x);\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], "CREATE TABLE a") || strings.HasSuffix(got[0], ";") || got[1] != "CREATE INDEX i ON a (x)" {
		t.Fatalf("splitStatements = %q", got)
	}
}

func TestBindExpandsLists(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sql string
		args      args
		want      string
		n         int
	}{
		{"scalars", "a = :a AND b = :b OR a = :a", args{"a": 1, "b": "x"}, "a = ? AND b = ? OR a = ?", 3},
		{"list", "seq IN (:seqs)", args{"seqs": []int64{1, 2, 3}}, "seq IN (?, ?, ?)", 3},
		{"empty list matches nothing", "seq IN (:seqs)", args{"seqs": []int64{}}, "seq IN (NULL)", 0},
		{"bytes are one value", "id = :id", args{"id": []byte{1, 2}}, "id = ?", 1},
		{"list of byte strings", "id IN (:ids)", args{"ids": [][]byte{{1}, {2}}}, "id IN (?, ?)", 2},
		{"per event", "x = :x", args{"x": byID{{[]byte{1}, "a"}, {[]byte{2}, nil}}}, "x = CASE id WHEN ? THEN ? WHEN ? THEN ? END", 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, vals := compile(tc.sql).bind(tc.args)
			if got != tc.want || len(vals) != tc.n {
				t.Fatalf("bind = %q with %d values, want %q with %d", got, len(vals), tc.want, tc.n)
			}
		})
	}
}
