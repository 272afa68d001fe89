// Package migrate applies a store's embedded, versioned SQL migrations. Each store owns
// its SQL and its bookkeeping statements; this package owns the order and the checks.
package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
)

// Migration is one versioned SQL file, named NNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Target is a database that migrations apply to.
type Target interface {
	// Applied returns the versions already applied, creating the bookkeeping table if needed.
	Applied(ctx context.Context) (map[int]bool, error)
	// Apply runs m and records its version in one transaction.
	Apply(ctx context.Context, m Migration) error
}

var fileName = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.sql$`)

// Load reads the migrations in dir of fsys, in version order, and checks that the
// versions run 1, 2, 3, … without gaps or duplicates.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", dir, err)
	}
	var ms []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			return nil, fmt.Errorf("migrate: %s: want files named NNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(body)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrate: migration %d (%s) found where %d was expected", m.Version, m.Name, i+1)
		}
	}
	return ms, nil
}

// Run applies, in order, every migration not yet applied to t, and returns those it
// applied. A database migrated by a newer program (a version beyond ms) is an error.
func Run(ctx context.Context, t Target, ms []Migration) ([]Migration, error) {
	applied, err := t.Applied(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: read applied versions: %w", err)
	}
	for v := range applied {
		if v > len(ms) {
			return nil, fmt.Errorf("migrate: database is at version %d, newer than this program knows (%d)", v, len(ms))
		}
	}
	var done []Migration
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		if err := t.Apply(ctx, m); err != nil {
			return done, fmt.Errorf("migrate: apply %03d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m)
	}
	return done, nil
}
