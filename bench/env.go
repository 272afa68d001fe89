package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The harness owns one database (created on first use) and, inside it, one schema per
// system. It drops and recreates only those schemas, never anything else on the server.
const (
	schemaOurs     = "bench_outbox"
	schemaOursNN   = "bench_outbox_nonotify"
	schemaOursTx   = "bench_outbox_tx"
	schemaRiver    = "bench_river"
	schemaWater    = "bench_watermill"
	schemaPlain    = "bench_plain"
	schemaLog      = "bench_log"
	schemaLogTx    = "bench_log_tx"
	poolMaxConns   = 12 // 8 writers, a listener and some slack; the server is shared
	orderTableDDL  = `CREATE TABLE %s.orders (id uuid PRIMARY KEY, user_id text NOT NULL, amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`
	insertOrderSQL = `INSERT INTO orders (id, user_id, amount) VALUES ($1, $2, $3)`
)

// ensureDatabase creates the database named in dsn when it does not exist, through the
// server's maintenance database.
func ensureDatabase(ctx context.Context, dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse -dsn: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to %s: %w", cfg.Database, err)
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	aconn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to the maintenance database to create %s: %w", cfg.Database, err)
	}
	defer aconn.Close(ctx)
	_, err = aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database: created meanwhile
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	return nil
}

// planCacheMode, when set (-plan-cache-mode), is PostgreSQL's plan_cache_mode on every
// connection of the harness: force_generic_plan or force_custom_plan show what the
// planner's choice between a statement's generic plan and one made for each call costs.
var planCacheMode string

// synchronousCommit, when not empty, is set as synchronous_commit on every connection
// (-synchronous-commit).
var synchronousCommit string

// newPool opens a pool whose connections resolve unqualified names in schema first,
// so the same business-table SQL serves every system.
func newPool(ctx context.Context, dsn, schema string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse -dsn: %w", err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.RuntimeParams["application_name"] = "outbox-bench"
	if planCacheMode != "" {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = planCacheMode
	}
	if synchronousCommit != "" {
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = synchronousCommit
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// recreateSchema drops the harness's own schema and makes it afresh with its business table.
func recreateSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	id := pgx.Identifier{schema}.Sanitize()
	for _, q := range []string{
		"DROP SCHEMA IF EXISTS " + id + " CASCADE",
		"CREATE SCHEMA " + id,
		fmt.Sprintf(orderTableDDL, id),
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func dropSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	_, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// machine describes where the numbers were taken, as benchstat configuration lines.
type machine struct {
	CPU, PG string
	NProc   int
	Extra   [][2]string // server settings that bound the numbers
}

func describeMachine(ctx context.Context, pool *pgxpool.Pool) (machine, error) {
	m := machine{CPU: cpuModel(), NProc: runtime.NumCPU()}
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&m.PG); err != nil {
		return m, err
	}
	for _, name := range []string{"synchronous_commit", "fsync", "wal_level", "shared_buffers", "max_wal_size", "checkpoint_timeout", "max_connections"} {
		var v string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return m, err
		}
		m.Extra = append(m.Extra, [2]string{name, v})
	}
	return m, nil
}

func (m machine) header() string {
	var b strings.Builder
	fmt.Fprintf(&b, "goos: %s\ngoarch: %s\npkg: github.com/fitiq/outbox/bench\ncpu: %s\nnproc: %d\npostgres: %s\n", runtime.GOOS, runtime.GOARCH, m.CPU, m.NProc, m.PG)
	for _, kv := range m.Extra {
		fmt.Fprintf(&b, "pg-%s: %s\n", strings.ReplaceAll(kv[0], "_", "-"), kv[1])
	}
	return b.String()
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// walLSN reads the server's current WAL position. The WAL is the whole server's, so a
// delta includes what other clients wrote meanwhile: an upper bound for one phase.
func walLSN(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var lsn int64
	err := pool.QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").Scan(&lsn)
	return lsn, err
}
