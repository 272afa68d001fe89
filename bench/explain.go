package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// recordingTracer keeps the SQL and arguments of every query run on a pool, so that
// -explain can show the plans of the statements the store really sends.
type recordingTracer struct {
	mu      sync.Mutex
	queries []traced
}

type traced struct {
	sql  string
	args []any
}

func (t *recordingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	t.mu.Lock()
	t.queries = append(t.queries, traced{d.SQL, d.Args})
	t.mu.Unlock()
	return ctx
}

func (t *recordingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// explain loads a backlog into the outbox table, records the statements of one
// processor cycle (claim, then settle of every event as delivered), and prints
// EXPLAIN (ANALYZE, BUFFERS, WAL) of each, run again with the same arguments inside a
// transaction that is rolled back.
func explain(ctx context.Context, o options, out io.Writer) error {
	if err := ensureDatabase(ctx, o.dsn); err != nil {
		return err
	}
	sys, err := newOurs(ctx, o.dsn)
	if err != nil {
		return err
	}
	s := sys.(*ours)
	defer func() {
		if !o.keep {
			_ = dropSchema(context.Background(), s.pool, s.schema)
		}
		s.Close()
	}()
	if err := s.Preload(ctx, variant{}, o.drainEvents); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE"); err != nil {
		return err
	}

	// A second pool on the same table, traced, for one cycle of a processor.
	cfg, err := pgxpool.ParseConfig(o.dsn)
	if err != nil {
		return err
	}
	tracer := &recordingTracer{}
	cfg.ConnConfig.Tracer = tracer
	cfg.ConnConfig.RuntimeParams["search_path"] = s.schema
	traced, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer traced.Close()
	store, err := postgres.New(ctx, traced, s.cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	const batch = 1000
	p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		outbox.Config{BatchSize: batch, MaxConcurrent: 100, Owner: "explain", Logger: quietLogger()})
	if err != nil {
		return err
	}
	// The cycle itself moves events; the plans below are of the same statements run
	// again on the events still pending, and rolled back.
	if _, err := p.ProcessBatch(ctx); err != nil {
		return err
	}
	var pending int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{oursTable}.Sanitize()+" WHERE status = 'pending'").Scan(&pending); err != nil {
		return err
	}
	fmt.Fprintf(out, "-- outbox table with %d pending events (%d completed by the traced cycle); batch of %d\n", pending, batch, batch)
	tx, err := traced.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, q := range tracer.queries {
		if strings.HasPrefix(strings.TrimSpace(q.sql), "SELECT count") || !strings.Contains(q.sql, "UPDATE") {
			continue // schema checks and the like
		}
		args := q.args
		if len(args) == 1 {
			if named, ok := args[0].(pgx.NamedArgs); ok && named["delivered"] != nil {
				// Settle the events claimed by the explained claim above, not the
				// traced cycle's (which are completed by now).
				ids, err := claimedIDs(ctx, tx, named["owner"])
				if err != nil {
					return err
				}
				settle := pgx.NamedArgs{}
				maps.Copy(settle, named)
				settle["delivered"] = ids
				args = []any{settle}
			}
		}
		fmt.Fprintf(out, "\n-- statement:\n%s\n\n", strings.TrimSpace(q.sql))
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) "+q.sql, args...)
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			fmt.Fprintln(out, line)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("explain: %w", err)
		}
	}
	return nil
}

func claimedIDs(ctx context.Context, tx pgx.Tx, owner any) ([]string, error) {
	rows, err := tx.Query(ctx, "SELECT id::text FROM "+pgx.Identifier{oursTable}.Sanitize()+" WHERE status = 'processing' AND lease_owner = $1", owner)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
