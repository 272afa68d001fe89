package migrate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

type memTarget struct {
	applied map[int]bool
	failAt  int
}

func (m *memTarget) Applied(context.Context) (map[int]bool, error) { return m.applied, nil }

func (m *memTarget) Apply(_ context.Context, mg Migration) error {
	if mg.Version == m.failAt {
		return errors.New("syntax error")
	}
	m.applied[mg.Version] = true
	return nil
}

func TestLoadChecksNamesAndOrder(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  string // error fragment; "" means success
	}{
		{"in order", []string{"001_a.sql", "002_b.sql"}, ""},
		{"gap", []string{"001_a.sql", "003_c.sql"}, "migration 3 (c) found where 2 was expected"},
		{"duplicate", []string{"001_a.sql", "001_b.sql"}, "found where 2 was expected"},
		{"bad name", []string{"001_a.sql", "two.sql"}, "two.sql: want files named NNN_name.sql"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for _, f := range tc.files {
				fsys["m/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			ms, err := Load(fsys, "m")
			switch {
			case tc.want == "" && (err != nil || len(ms) != len(tc.files)):
				t.Fatalf("Load = %d migrations, %v", len(ms), err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Load error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRunAppliesWhatIsMissingInOrder(t *testing.T) {
	ms := []Migration{{1, "a", ""}, {2, "b", ""}, {3, "c", ""}}
	target := &memTarget{applied: map[int]bool{1: true}}
	done, err := Run(context.Background(), target, ms)
	if err != nil || len(done) != 2 || done[0].Version != 2 || done[1].Version != 3 {
		t.Fatalf("Run = %v, %v; want 2 then 3", done, err)
	}
	if done, err := Run(context.Background(), target, ms); err != nil || len(done) != 0 {
		t.Fatalf("second Run = %v, %v; want nothing to do", done, err)
	}
}

func TestRunStopsAtAFailingMigration(t *testing.T) {
	ms := []Migration{{1, "a", ""}, {2, "b", ""}, {3, "c", ""}}
	target := &memTarget{applied: map[int]bool{}, failAt: 2}
	done, err := Run(context.Background(), target, ms)
	if err == nil || !strings.Contains(err.Error(), "002_b") || len(done) != 1 || target.applied[3] {
		t.Fatalf("Run = %v, %v; want 1 applied, then an error naming 002_b, and 3 untouched", done, err)
	}
}

func TestRunRefusesANewerDatabase(t *testing.T) {
	target := &memTarget{applied: map[int]bool{1: true, 2: true, 3: true}}
	_, err := Run(context.Background(), target, []Migration{{1, "a", ""}, {2, "b", ""}})
	if err == nil || !strings.Contains(err.Error(), "newer than this program knows") {
		t.Fatalf("Run = %v, want a refusal", err)
	}
}
