package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// dsn is a parsed store address.
type dsn struct {
	raw    string
	sqlite string          // path, for sqlite:PATH
	pg     *pgxpool.Config // for postgres://…
	pgCfg  postgres.Config // schema and table from the query string
	my     *gomysql.Config // for mysql://…
	myCfg  mysql.Config    // table from the query string
}

// parseDSN checks a DSN without touching the store: its form, and for PostgreSQL the
// outbox table's names (schema=, table=, channel=), so that a name the store would
// refuse is bad input (exit 2), not a failure to open.
func parseDSN(raw string) (dsn, error) {
	d := dsn{raw: raw}
	if goMySQLDSN.MatchString(raw) {
		return parseMySQLDSN(d)
	}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return d, usagef("malformed DSN %q: want sqlite:PATH, postgres://… or mysql://…", redactDSN(raw))
	}
	switch scheme {
	case "sqlite", "sqlite3":
		path := strings.TrimPrefix(rest, "//") // sqlite:///abs/path and sqlite://rel/path too
		if path == "" {
			return d, usagef("malformed DSN %q: sqlite: needs a file path, as in sqlite:./outbox.db", raw)
		}
		d.sqlite = path
		return d, nil
	case "postgres", "postgresql":
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return d, usagef("malformed DSN %q: want postgres://user@host:port/database", redactDSN(raw))
		}
		// schema, table and channel are ours; anything else is passed to the server by pgx.
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return d, usagef("DSN %q: the query string does not parse: %v", redactDSN(raw), scrub(err.Error(), raw))
		}
		d.pgCfg.Schema, d.pgCfg.Table, d.pgCfg.Channel = q.Get("schema"), q.Get("table"), q.Get("channel")
		q.Del("schema")
		q.Del("table")
		q.Del("channel")
		if err := d.pgCfg.Validate(); err != nil {
			return d, usagef("DSN %q: %s", redactDSN(raw), dsnParam(err))
		}
		u.RawQuery = q.Encode()
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			return d, usagef("malformed DSN %q: %s", redactDSN(raw), scrub(err.Error(), raw))
		}
		d.pg = cfg
		return d, nil
	case "mysql":
		return parseMySQLDSN(d)
	default:
		return d, usagef("unsupported DSN scheme %q in %q: want sqlite:PATH, postgres://… or mysql://…", scheme, redactDSN(raw))
	}
}

// dsnParam names a refused store setting by the DSN parameter that set it.
func dsnParam(err error) string {
	msg := err.Error()
	for field, param := range map[string]string{
		"postgres.Config.Schema": "schema=", "postgres.Config.Table": "table=", "postgres.Config.Channel": "channel=",
	} {
		if strings.Contains(msg, field) {
			msg = strings.Replace(strings.TrimPrefix(msg, "outbox: "), field, param, 1)
			if param == "channel=" {
				msg += " (with ?channel=NAME)"
			}
			return msg
		}
	}
	return msg
}

// redactDSN returns raw without its passwords, whatever its shape: it need not parse.
func redactDSN(raw string) string {
	if scheme, _, _ := strings.Cut(raw, ":"); scheme == "sqlite" || scheme == "sqlite3" {
		return raw // a file path, which may hold ':' and '@'
	}
	return scrub(raw, raw)
}

// passwordParam is a password given as a parameter: key=value DSNs, URL queries.
var passwordParam = regexp.MustCompile(`(?i)password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// scrub replaces in s every password found in dsn, as written and URL-decoded.
func scrub(s, dsn string) string {
	var secrets []string
	rest := dsn
	if _, r, ok := strings.Cut(dsn, "://"); ok {
		rest = r
	}
	// The user info runs to the last '@': a password may hold '@', '/' or '?' when the
	// DSN is malformed, and over-redacting is harmless.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
			secrets = append(secrets, pw)
		}
	}
	for _, m := range passwordParam.FindAllStringSubmatch(dsn, -1) {
		if pw := strings.Trim(m[1], "'"); pw != "" {
			secrets = append(secrets, m[1], pw)
		}
	}
	for _, pw := range secrets {
		if dec, err := url.PathUnescape(pw); err == nil && dec != pw {
			secrets = append(secrets, dec)
		}
		if dec, err := url.QueryUnescape(pw); err == nil && dec != pw {
			secrets = append(secrets, dec)
		}
	}
	// Longest first, so that a password containing another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, pw := range secrets {
		s = strings.ReplaceAll(s, pw, "xxxxx")
	}
	return s
}

// goMySQLDSN matches the Go driver's own DSN form, user:pass@tcp(host:3306)/db (also
// unix(…)), which the tests' OUTBOX_MYSQL_DSN and many applications use.
var goMySQLDSN = regexp.MustCompile(`^(?:[^@/]*@)?(?:tcp|tcp4|tcp6|unix)\(`)

// parseMySQLDSN reads mysql://user:pass@host:3306/db?table=… or the driver's
// user:pass@tcp(host:3306)/db?table=…; the query parameters other than table are the
// driver's. Parameters are interpolated on the client unless the DSN says otherwise:
// one round trip per statement instead of a prepare, an execute and a close.
func parseMySQLDSN(d dsn) (dsn, error) {
	raw := d.raw
	if strings.HasPrefix(raw, "mysql:") {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" {
			return d, usagef("malformed DSN %q: want mysql://user:pass@host:3306/database", redactDSN(raw))
		}
	}
	base, query, _ := strings.Cut(raw, "?")
	if !strings.HasPrefix(raw, "mysql:") {
		if _, db, _ := strings.Cut(base, ")/"); db == "" {
			return d, usagef("malformed DSN %q: want user:pass@tcp(host:3306)/database", redactDSN(raw))
		}
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return d, usagef("DSN %q: the query string does not parse: %s", redactDSN(raw), scrub(err.Error(), raw))
	}
	d.myCfg.Table = q.Get("table")
	_, interpolate := q["interpolateParams"]
	q.Del("table")
	if len(q) > 0 {
		base += "?" + q.Encode()
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		return d, usagef("malformed DSN %q: %s", redactDSN(raw), scrub(err.Error(), raw))
	}
	if !interpolate {
		cfg.InterpolateParams = true
	}
	d.my = cfg
	return d, nil
}

// openMySQL connects to MySQL or MariaDB.
func (d dsn) openMySQL(ctx context.Context, forMigrate bool, log *slog.Logger, timeout time.Duration) (*openedStore, error) {
	my := d.my.Clone()
	if my.Timeout == 0 {
		my.Timeout = timeout // the dial; ctx bounds the rest
	}
	connector, err := gomysql.NewConnector(my)
	if err != nil {
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	db := sql.OpenDB(connector)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, d.unreachable(err, timeout)
	}
	cfg := d.myCfg
	cfg.Logger = log
	if forMigrate {
		return &openedStore{
			migrate: func(ctx context.Context) ([]int, error) { return mysql.Migrate(ctx, db, cfg) },
			close:   func() { db.Close() },
		}, nil
	}
	s, err := mysql.New(ctx, db, cfg)
	if err != nil {
		db.Close()
		if errors.Is(err, mysql.ErrNotMigrated) {
			return nil, d.notMigrated(err, mysql.ErrNotMigrated)
		}
		return nil, timedOut(err, timeout)
	}
	return &openedStore{Store: s, close: func() { s.Close(); db.Close() }}, nil
}

// openedStore is a store with what it takes to close it. For migrate, Store is nil
// and migrate is set.
type openedStore struct {
	outbox.Store
	migrate func(ctx context.Context) ([]int, error)
	close   func()

	// The connections, for the log layout (log.go): pool on PostgreSQL, db on SQLite.
	pool *pgxpool.Pool
	db   *sql.DB
}

// open connects to the store, giving up after timeout: connecting, checking the
// schema, and (see withStore) each statement after. Only migrate may create a SQLite
// file: for every other command a missing file is an error, so that a mistyped path
// writes nothing.
func (d dsn) open(ctx context.Context, forMigrate bool, timeout time.Duration) (*openedStore, error) {
	log := slog.New(slog.DiscardHandler) // the commands report errors themselves
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if d.sqlite != "" {
		// SQLite says only "unable to open database file (14)" for a folder that is not there.
		dir := filepath.Dir(d.sqlite)
		if fi, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no SQLite database at %s: the folder %s does not exist", d.sqlite, dir)
		} else if err == nil && !fi.IsDir() {
			return nil, fmt.Errorf("no SQLite database at %s: %s is not a folder", d.sqlite, dir)
		}
		if !forMigrate {
			if _, err := os.Stat(d.sqlite); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no SQLite database at %s (create it with 'outbox migrate')", d.sqlite)
			}
		}
		db, err := sqlite.Open(d.sqlite, sqlite.OpenConfig{BusyTimeout: timeout})
		if err != nil {
			return nil, err
		}
		if forMigrate {
			return &openedStore{
				migrate: func(ctx context.Context) ([]int, error) { return sqlite.Migrate(ctx, db) },
				close:   func() { db.Close() },
				db:      db,
			}, nil
		}
		s, err := sqlite.New(ctx, db, sqlite.Config{Logger: log})
		if err != nil {
			db.Close()
			if errors.Is(err, sqlite.ErrNotMigrated) {
				return nil, d.notMigrated(err, sqlite.ErrNotMigrated)
			}
			return nil, timedOut(err, timeout)
		}
		return &openedStore{Store: s, close: func() { db.Close() }, db: db}, nil
	}
	if d.my != nil {
		return d.openMySQL(ctx, forMigrate, log, timeout)
	}
	pgc := d.pg.Copy()
	postgres.ConfigurePool(pgc, timeout)
	pool, err := pgxpool.NewWithConfig(ctx, pgc)
	if err != nil {
		return nil, d.unreachable(err, timeout)
	}
	cfg := d.pgCfg
	cfg.Logger = log
	if forMigrate {
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, d.unreachable(err, timeout)
		}
		return &openedStore{
			migrate: func(ctx context.Context) ([]int, error) { return postgres.Migrate(ctx, pool, cfg) },
			close:   pool.Close,
			pool:    pool,
		}, nil
	}
	s, err := postgres.New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		if errors.Is(err, postgres.ErrNotMigrated) {
			return nil, d.notMigrated(err, postgres.ErrNotMigrated)
		}
		return nil, d.unreachable(err, timeout)
	}
	return &openedStore{Store: s, close: func() { s.Close(); pool.Close() }, pool: pool}, nil
}

// notMigrated says that the store is not migrated, and what to run.
func (d dsn) notMigrated(err, sentinel error) error {
	return d.unmigrated("the outbox schema", "outbox migrate", err, sentinel)
}

// unmigrated says that what (the outbox schema, the event log) is not migrated, and
// to run command, once: the stores' own errors carry advice for Go callers ("run
// postgres.Migrate …"), which is cut.
func (d dsn) unmigrated(what, command string, err, sentinel error) error {
	detail := err.Error()
	if _, after, ok := strings.Cut(detail, sentinel.Error()); ok {
		detail = strings.TrimPrefix(after, ": ")
	}
	detail = migrateAdvice.ReplaceAllString(detail, "")
	if detail != "" {
		detail = ": " + detail
	}
	return fmt.Errorf("%s at %s is not migrated%s (run '%s')", what, d.describe(), scrub(detail, d.raw), command)
}

// migrateAdvice is the stores' advice to Go callers at the end of ErrNotMigrated.
var migrateAdvice = regexp.MustCompile(`;\s*run \S+\.Migrate[^;]*$`)

// unreachable says that the server could not be reached, and why, without the
// password; no answer within the timeout is "cannot tell" (exit 2). A server that
// answered that the database does not exist was reached: that is said instead.
func (d dsn) unreachable(err error, timeout time.Duration) error {
	server := "PostgreSQL"
	if d.my != nil {
		server = "MySQL"
	}
	var pgErr *pgconn.PgError
	var myErr *gomysql.MySQLError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "3D000": // invalid_catalog_name
		return fmt.Errorf("%s at %s has no database %q: create it (CREATE DATABASE), or name another in the DSN",
			server, d.describe(), d.pg.ConnConfig.Database)
	case errors.As(err, &myErr) && myErr.Number == 1049: // ER_BAD_DB_ERROR
		return fmt.Errorf("%s at %s has no database %q: create it (CREATE DATABASE), or name another in the DSN",
			server, d.describe(), d.my.DBName)
	}
	msg := fmt.Sprintf("cannot reach %s at %s: %s", server, d.describe(), scrub(err.Error(), d.raw))
	if isTimeout(err) {
		return &exitError{code: ExitUsage, msg: fmt.Sprintf("cannot tell: no answer within %s (--timeout): %s", timeout, msg)}
	}
	return errors.New(msg)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, outbox.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// timedOut turns a store that did not answer within the timeout into "cannot tell"
// (exit 2): the command could not find out, which is not the same as a failure.
func timedOut(err error, timeout time.Duration) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if isTimeout(err) {
		return &exitError{code: ExitUsage, msg: fmt.Sprintf("cannot tell: the store did not answer within %s (--timeout): %v", timeout, err)}
	}
	return err
}

// describe names the store for messages, without a password.
func (d dsn) describe() string {
	if d.sqlite != "" {
		return "sqlite:" + d.sqlite
	}
	return redactDSN(d.raw)
}
