package cli

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/fitiq/outbox/examples/fitiq/backend"
)

const backendUsage = `Usage:
  fitiq backend [flags]

Serves FitIQ's remote API (JSON over HTTP) from its own database: a SQLite file by
default, PostgreSQL when --dsn is a postgres:// URL. Tokens are stored as SHA-256
digests; each authenticates one user, who may touch only their own data.

Flags:
  --addr ADDR        listen address (default 127.0.0.1:8080; use :8080 to serve beyond this machine)
  --dsn DSN          database: a SQLite file, or postgres://… (env FITIQ_BACKEND_DSN;
                     default fitiq-backend.db)
  --schema NAME      PostgreSQL schema for the tables (default public)
  --token USER=TOK   let TOK authenticate USER (repeatable; env FITIQ_TOKENS, comma-separated)
  --issue USER       issue a fresh random token for USER and print it (repeatable)
  --max-body BYTES   request body limit (default 65536)
  -v                 log refused requests to stderr

Examples:
  fitiq backend --issue me
  fitiq backend --addr :8080 --dsn postgres://fitiq@db.internal/fitiq --token alice=$ALICE_TOKEN
`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runBackend(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "")
	dsn := fs.String("dsn", cmp.Or(os.Getenv("FITIQ_BACKEND_DSN"), "fitiq-backend.db"), "")
	schema := fs.String("schema", "", "")
	maxBody := fs.Int64("max-body", 64<<10, "")
	verbose := fs.Bool("v", false, "")
	var tokens, issue multiFlag
	if env := os.Getenv("FITIQ_TOKENS"); env != "" {
		tokens = strings.Split(env, ",")
	}
	fs.Var(&tokens, "token", "")
	fs.Var(&issue, "issue", "")
	pos, code, ok := parse(fs, backendUsage, args, out, errOut)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(errOut, "backend", "unexpected arguments %q", pos)
	}
	if *maxBody < 1 {
		return usageError(errOut, "backend", "--max-body must be positive, got %d", *maxBody)
	}
	type grant struct{ user, token string }
	var grants []grant
	for _, t := range tokens {
		user, tok, found := strings.Cut(strings.TrimSpace(t), "=")
		if !found || user == "" || tok == "" {
			return usageError(errOut, "backend", "--token %q: want USER=TOKEN", t)
		}
		grants = append(grants, grant{user, tok})
	}
	for _, user := range issue {
		if user == "" {
			return usageError(errOut, "backend", "--issue needs a user ID")
		}
		grants = append(grants, grant{user, newToken()})
	}

	db, err := backend.Open(ctx, backend.OpenConfig{DSN: *dsn, Schema: *schema})
	if err != nil {
		return failed(errOut, "backend", err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return failed(errOut, "backend", err)
	}
	for _, g := range grants {
		if err := db.AddToken(ctx, g.user, g.token); err != nil {
			return failed(errOut, "backend", fmt.Errorf("token for %s: %w", g.user, err))
		}
	}
	for i, user := range issue {
		fmt.Fprintf(out, "token for %s: %s\n", user, grants[len(grants)-len(issue)+i].token)
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(errOut, nil))
	}
	srv, err := backend.New(db, backend.Config{MaxBodyBytes: *maxBody, Logger: logger})
	if err != nil {
		return usageError(errOut, "backend", "%v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return failed(errOut, "backend", err)
	}
	fmt.Fprintf(out, "FitIQ API listening on http://%s (%s database); Ctrl-C to stop\n", ln.Addr(), db.Dialect())
	if err := srv.Serve(ctx, ln); err != nil {
		return failed(errOut, "backend", err)
	}
	fmt.Fprintln(out, "stopped")
	return exitOK
}

func newToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
