package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// riverSystem is River used as an outbox: InsertTx in the business transaction, a
// worker that hands the job to the receiver.
type riverSystem struct {
	pool   *pgxpool.Pool
	insert *river.Client[pgx.Tx] // insert-only: no queues, no workers
}

// riverDefaultWorkers is the MaxWorkers of River's getting-started example; River itself
// requires a value.
const riverDefaultWorkers = 100

func newRiver(ctx context.Context, dsn string) (system, error) {
	pool, err := newPool(ctx, dsn, schemaRiver, poolMaxConns)
	if err != nil {
		return nil, err
	}
	s := &riverSystem{pool: pool}
	if err := s.setup(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("river: %w", err)
	}
	return s, nil
}

func (s *riverSystem) setup(ctx context.Context) error {
	if err := recreateSchema(ctx, s.pool, schemaRiver); err != nil {
		return err
	}
	m, err := rivermigrate.New(riverpgxv5.New(s.pool), &rivermigrate.Config{Schema: schemaRiver, Logger: quietLogger()})
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	s.insert, err = river.NewClient(riverpgxv5.New(s.pool), &river.Config{Schema: schemaRiver, Logger: quietLogger()})
	return err
}

func (s *riverSystem) Name() string        { return "river" }
func (s *riverSystem) Pool() *pgxpool.Pool { return s.pool }

func (s *riverSystem) EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (string, error) {
	res, err := s.insert.InsertTx(ctx, tx, o.event(), nil)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(res.Job.ID, 10), nil
}

func (s *riverSystem) Preload(ctx context.Context, _ variant, n int) error {
	const chunk = 5000
	for done := 0; done < n; done += chunk {
		params := make([]river.InsertManyParams, 0, min(chunk, n-done))
		for i := range cap(params) {
			params = append(params, river.InsertManyParams{Args: newOrder(0, done+i).event()})
		}
		if _, err := s.insert.InsertManyFast(ctx, params); err != nil {
			return err
		}
	}
	return nil
}

func (s *riverSystem) Reset(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE orders, river_job`)
	return err
}

type riverWorker struct {
	river.WorkerDefaults[orderPlaced]
	deliver func(string)
}

func (w *riverWorker) Work(_ context.Context, job *river.Job[orderPlaced]) error {
	w.deliver(strconv.FormatInt(job.ID, 10))
	return nil
}

func (s *riverSystem) Consume(ctx context.Context, v variant, deliver func(string)) (func(context.Context) error, error) {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &riverWorker{deliver: deliver}); err != nil {
		return nil, err
	}
	client, err := river.NewClient(riverpgxv5.New(s.pool), &river.Config{
		Schema:  schemaRiver,
		Logger:  quietLogger(),
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cmp.Or(v.Workers, riverDefaultWorkers)}},
		Workers: workers,
	})
	if err != nil {
		return nil, err
	}
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return client.Stop, nil
}

func (s *riverSystem) Close() { s.pool.Close() }

// quietLogger passes on warnings and errors only: a benchmark should not measure logging.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
