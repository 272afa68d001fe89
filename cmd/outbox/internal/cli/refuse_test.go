package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// Each bad input found by trying the command as an operator would is refused at the
// door: exit 2, one line naming it, nothing written, nothing opened.
func TestBadInputRefusedAtTheDoor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "outbox.db")
	dsn := "sqlite:" + dbPath
	if r := runEnv(t, Env{}, "migrate", "--dsn", dsn); r.code != 0 {
		t.Fatal(r)
	}
	fresh := filepath.Join(dir, "never-created.db")
	pg := "postgres://u@127.0.0.1:1/db"
	sink := []string{"--sink", "http://127.0.0.1:1/"}
	relay := func(args ...string) []string {
		return append(append([]string{"relay", "--dsn", "sqlite:" + fresh}, sink...), args...)
	}
	tests := []struct {
		name string
		args []string
		want string // in the one line on stderr
	}{
		// 2. Leases too short to renew.
		{"lease of 2ns", relay("--lease", "2ns"), "--lease must be at least 10ms, got 2ns"},
		{"lease of 1ms", relay("--lease", "1ms"), "--lease must be at least"},
		// 3. Headers no request can carry.
		{"header name with a space", relay("--header", "Bad Name: v"), `--header: "Bad Name" is not a header name`},
		{"header name with a slash", relay("--header", "X/Y: v"), `"X/Y" is not a header name`},
		{"header value with a control character", relay("--header", "X-A: a\x01b"), "--header: the value of X-A"},
		{"header value with DEL", relay("--header", "X-A: a\x7f"), "control character"},
		// 6. A NaN rate would turn the rule off.
		{"health NaN failure rate", []string{"health", "--dsn", dsn, "--max-failure-rate", "NaN"}, "--max-failure-rate is a share from 0 to 1"},
		{"health rate above 1", []string{"health", "--dsn", dsn, "--max-failure-rate", "1.5"}, "--max-failure-rate"},
		// 7. Names PostgreSQL would refuse or truncate, an impossible port.
		{"schema with a semicolon", []string{"stats", "--dsn", pg + "?schema=x;drop"}, "the query string does not parse: invalid semicolon separator"},
		{"schema with an escaped semicolon", []string{"stats", "--dsn", pg + "?schema=x%3Bdrop"}, `schema= must be a plain SQL identifier (letters, digits and underscores, not starting with a digit), got "x;drop"`},
		{"table of 46 bytes", []string{"stats", "--dsn", pg + "?table=" + strings.Repeat("t", 46)}, "table= is 46 bytes, over the limit of 45"},
		{"schema of 64 bytes", []string{"migrate", "--dsn", pg + "?schema=" + strings.Repeat("s", 64)}, "schema= is 64 bytes"},
		{"schema of 60 bytes: channel too long", []string{"health", "--dsn", pg + "?schema=" + strings.Repeat("s", 60)}, "channel= is 74 bytes, over PostgreSQL's limit of 63; set a shorter one (with ?channel=NAME)"},
		{"channel of 64 bytes", []string{"relay", "--dsn", pg + "?channel=" + strings.Repeat("c", 64), "--sink", "http://x/"}, "channel= is 64 bytes"},
		{"metrics port out of range", relay("--metrics-addr", "127.0.0.1:99999"), `--metrics-addr "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"metrics port not a number", relay("--metrics-addr", ":http-alt"), `port "http-alt"`},
		// 8. Durations a time.Duration cannot hold.
		{"purge 200000 days", []string{"purge", "--dsn", dsn, "--completed-before", "200000d"}, `invalid duration "200000d": longer than 106751d`},
		{"purge NaN days", []string{"purge", "--dsn", dsn, "--completed-before", "NaNd"}, `invalid duration "NaNd"`},
		{"purge infinite days", []string{"purge", "--dsn", dsn, "--completed-before", "+Infd"}, `invalid duration "+Infd"`},
		{"relay lease of 1e6 days", relay("--lease", "1e6d"), `invalid duration "1e6d"`},
		// The timeout itself.
		{"zero timeout", []string{"stats", "--dsn", dsn, "--timeout", "0s"}, "--timeout must be positive"},
		{"negative timeout", []string{"health", "--dsn", dsn, "--timeout", "-1s"}, "--timeout must be positive"},
		// 9. An ID that is no spelling of a UUID.
		{"show almost a UUID", []string{"show", "--dsn", dsn, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5"}, "is not an event ID"},
		{"retry braces without a UUID", []string{"retry", "--dsn", dsn, "{x}"}, `"{x}" is not an event ID`},
	}
	before := fileSum(t, dbPath)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEnv(t, Env{}, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit %d, want 2\n%v", r.code, r)
			}
			if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q: want one line containing %q", r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, "run 'outbox migrate'") {
				t.Errorf("bad input answered with a hint to migrate: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Fatalf("%s was created", fresh)
			}
			if fileSum(t, dbPath) != before {
				t.Fatalf("the database file changed")
			}
		})
	}
}

// A shorter channel makes a long schema usable: the DSN's channel= reaches the store.
func TestChannelParamAcceptsALongSchema(t *testing.T) {
	t.Parallel()
	d, err := parseDSN("postgres://u@127.0.0.1:1/db?schema=" + strings.Repeat("s", 60) + "&channel=outbox_wake")
	if err != nil {
		t.Fatal(err)
	}
	if d.pgCfg.Channel != "outbox_wake" || strings.Contains(d.pg.ConnString(), "channel") {
		t.Fatalf("channel %q, conn string %q: want the channel taken from the DSN and not sent to the server", d.pgCfg.Channel, d.pg.ConnString())
	}
}

// 7. A server that is not there is said to be unreachable, not unmigrated.
func TestUnreachablePostgresSaysSo(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	for _, cmd := range []string{"stats", "ls", "migrate"} {
		r := runEnv(t, Env{}, cmd, "--dsn", "postgres://u:s3cr3tpw@"+addr+"/db?sslmode=disable")
		if r.code != ExitFailure || !strings.Contains(r.stderr, "PostgreSQL at postgres://u:xxxxx@"+addr) ||
			strings.Contains(r.stderr, "migrate'") || strings.Contains(r.stderr, "s3cr3tpw") {
			t.Errorf("%s against a closed port: %v\nwant exit 1 saying PostgreSQL cannot be reached, no migrate hint, no password", cmd, r)
		}
	}
}

// 4. No output of the command ever holds a password, whatever the shape of the DSN.
func TestPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3tpw"
	dsns := []string{
		"postgres://u:" + pw + "@127.0.0.1:badport/db",
		"postgres://u:" + pw + "@127.0.0.1:1/db",
		"postgres://u:" + pw + "@[::1/db",
		"postgres://u:" + pw + "@/db",
		"postgres://u:" + pw + "@host:99999999/db",
		"postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=bogus",
		"postgres://u:" + pw + "@127.0.0.1:1/db?schema=x;drop",
		"postgres://u:" + pw + "@127.0.0.1:1/db?connect_timeout=x",
		"postgres://u:s3cr%33tpw@127.0.0.1:badport/db", // escaped: decodes to the password
		"postgres://u:" + pw + "/x@127.0.0.1:1/db",     // a slash in the password
		"postgres://u:" + pw + "@@127.0.0.1:1/db",
		"postgres://u@127.0.0.1:1/db?password=" + pw,
		"postgres://u@127.0.0.1:badport/db?password=" + pw,
		"postgres://127.0.0.1:1/db?user=u&password=" + pw + "&sslmode=nope",
		"postgresql://u:" + pw + "@127.0.0.1:1,127.0.0.1:x/db",
		"postgres:u:" + pw + "@127.0.0.1/db",
		"mysql://u:" + pw + "@127.0.0.1/db",
		"host=127.0.0.1 password=" + pw + " dbname=db",
		"host=127.0.0.1 password='" + pw + "' dbname=db",
		"u:" + pw + "@127.0.0.1/db",
	}
	for _, dsn := range dsns {
		for _, args := range [][]string{
			{"stats", "--dsn", dsn, "--timeout", "2s"},
			{"health", "--dsn", dsn, "--timeout", "2s"},
			{"migrate", "--dsn", dsn, "--timeout", "2s"},
			{"relay", "--dsn", dsn, "--timeout", "2s", "--sink", "http://127.0.0.1:1/", "--once"},
		} {
			r := runEnv(t, Env{}, args...)
			if r.code == ExitOK {
				t.Errorf("%v succeeded: %v", args, r)
			}
			if strings.Contains(r.stdout+r.stderr, pw) || strings.Contains(r.stdout+r.stderr, "s3cr%33tpw") {
				t.Errorf("%s %q printed the password:\n%s", args[0], dsn, r.stderr)
			}
		}
	}
}

// 5. A SQLite path is a file name, whatever it holds: '#', '?', '%', spaces.
func TestSQLitePathsAreFileNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"we#ird.db", "a%20b.db", "what?.db", "sp ace.db", "per%cent.db"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, name)
			if r := runEnv(t, Env{}, "migrate", "--dsn", "sqlite:"+path); r.code != ExitOK {
				t.Fatalf("migrate: %v", r)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if len(names) == 0 || names[0] != name {
				t.Fatalf("migrate created %v, want %q", names, name)
			}
			if r := runEnv(t, Env{}, "stats", "--dsn", "sqlite:"+path); r.code != ExitOK {
				t.Fatalf("stats on the file migrate made: %v", r)
			}
		})
	}
}

// 9. Every spelling of an event's UUID finds it, on every store.
func TestOtherSpellingsOfAnIDFindTheEvent(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		s := migrated(t, b)
		clock := outboxtest.NewClock(t0)
		_, givenUp, _ := seed(t, s, clock)
		id := givenUp.ID
		for _, spelling := range []string{strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id, strings.ReplaceAll(id, "-", "")} {
			r := runEnv(t, Env{Clock: clock}, "show", "--dsn", b.dsn, "--json", spelling)
			if r.code != ExitOK || !strings.Contains(r.stdout, id) {
				t.Fatalf("show %s: %v", spelling, r)
			}
		}
		r := runEnv(t, Env{Clock: clock}, "retry", "--dsn", b.dsn, strings.ToUpper(id))
		if r.code != ExitOK {
			t.Fatalf("retry upper case: %v", r)
		}
		e, err := s.Get(context.Background(), id)
		if err != nil || e.Status != outbox.StatusPending {
			t.Fatalf("after retry by the upper-case ID: %+v, %v; want pending", e, err)
		}
	})
}

// A server that accepts connections and never answers: the commands give up after
// --timeout with exit 2 ("cannot tell") instead of hanging.
func TestNeverAnsweringServerIsCannotTell(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn // accepted, never answered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	defer func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	}()
	dsn := "postgres://u:s3cr3tpw@" + ln.Addr().String() + "/db?sslmode=disable"
	for _, args := range [][]string{
		{"stats", "--dsn", dsn, "--timeout", "300ms"},
		{"health", "--dsn", dsn, "--timeout", "300ms"},
		{"ls", "--dsn", dsn, "--timeout", "300ms"},
		{"relay", "--dsn", dsn, "--timeout", "300ms", "--sink", "http://127.0.0.1:1/"},
	} {
		r := runEnv(t, Env{}, args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "cannot tell") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s against a server that never answers: %v\nwant exit 2, one line saying it cannot tell", args[0], r)
		}
		if strings.Contains(r.stderr, "s3cr3tpw") {
			t.Errorf("%s printed the password: %s", args[0], r.stderr)
		}
	}
}
