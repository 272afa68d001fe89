package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the default driver: pure Go, no cgo (docs/sqlite.md has the measurement)
)

// DefaultBusyTimeout is OpenConfig.BusyTimeout's default.
const DefaultBusyTimeout = 10 * time.Second

// OpenConfig tunes Open.
type OpenConfig struct {
	// Synchronous is SQLite's synchronous setting: "NORMAL" or "FULL". With NORMAL (in
	// WAL mode) a commit survives a crash of the process; a power cut or OS crash may
	// undo the last few commits, each whole: data and its events are kept or lost
	// together, never one without the other. FULL also survives a power cut, at about a
	// quarter of the write throughput. Defaults to "NORMAL".
	Synchronous string
	// BusyTimeout is how long a write waits for another connection's write to finish
	// before failing with "database is locked". Defaults to DefaultBusyTimeout.
	BusyTimeout time.Duration
}

// Open opens (creating if needed) the SQLite database at path with the settings the
// outbox relies on: WAL journal (readers never block the writer), a busy timeout (the
// application's writes and the processor's take turns instead of failing), immediate
// write transactions (no lock upgrade to fail half-way), and foreign keys on. It uses
// the pure-Go modernc.org/sqlite driver.
func Open(path string, cfg OpenConfig) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("outbox/sqlite: Open: path must not be empty")
	}
	sync := strings.ToUpper(cmp.Or(cfg.Synchronous, "NORMAL"))
	if sync != "NORMAL" && sync != "FULL" {
		return nil, fmt.Errorf("outbox/sqlite: OpenConfig.Synchronous must be NORMAL or FULL, got %q", cfg.Synchronous)
	}
	if cfg.BusyTimeout < 0 {
		return nil, fmt.Errorf("outbox/sqlite: OpenConfig.BusyTimeout must not be negative, got %s", cfg.BusyTimeout)
	}
	busy := cmp.Or(cfg.BusyTimeout, DefaultBusyTimeout)
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	// The path goes into a file: URI, so it is escaped there: a '#', '?' or '%' in a
	// file name is part of the name, not of the URI.
	dsn := (&url.URL{Scheme: "file", Opaque: fileURIPath(path), RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: open %s: %w", path, err)
	}
	if err := db.PingContext(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox/sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// fileURIPath escapes path for the path part of a file: URI, keeping '/' (and, for a
// relative path, its being relative).
func fileURIPath(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	escaped := strings.Join(parts, "/")
	if strings.HasPrefix(path, "/") {
		return "//" + escaped // file:///abs/path: an empty authority
	}
	return escaped
}
