package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// plain is the ceiling for enqueue: the business row and a minimal event row (key and
// JSON payload, nothing to claim it by) in one transaction, as pgbench would write them.
type plain struct{ pool *pgxpool.Pool }

const (
	plainEventsDDL = `CREATE TABLE events (id uuid PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`
	plainInsertSQL = `INSERT INTO events (id, payload) VALUES ($1, $2)`
)

func newPlain(ctx context.Context, dsn string) (system, error) {
	pool, err := newPool(ctx, dsn, schemaPlain, poolMaxConns)
	if err != nil {
		return nil, err
	}
	if err := recreateSchema(ctx, pool, schemaPlain); err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := pool.Exec(ctx, plainEventsDDL); err != nil {
		pool.Close()
		return nil, fmt.Errorf("plain: create events: %w", err)
	}
	return &plain{pool: pool}, nil
}

func (p *plain) Name() string        { return "plain" }
func (p *plain) Pool() *pgxpool.Pool { return p.pool }

func (p *plain) EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (string, error) {
	_, err := tx.Exec(ctx, plainInsertSQL, o.ID, o.payload())
	return o.ID.String(), err
}

func (p *plain) Preload(context.Context, variant, int) error { return errors.ErrUnsupported }

func (p *plain) Reset(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, `TRUNCATE orders, events`)
	return err
}

func (p *plain) Consume(context.Context, variant, func(string)) (func(context.Context) error, error) {
	return nil, errors.ErrUnsupported
}

func (p *plain) Close() { p.pool.Close() }
