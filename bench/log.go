package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// logSystem is the log layout (issue 24; the default for a new outbox): postgres.Log.AppendTx in
// Log.Transact or in the caller's own transaction, and a postgres.LogRelay delivering
// from the log by its cursor.
// The relay moves an event whose delivery fails to a Store's events table, which must
// be in the log's database: it is migrated in the same schema, and stays empty while
// the receiver accepts everything.
type logSystem struct {
	name     string
	transact bool // enqueue through Log.Transact rather than the caller's own transaction
	schema   string
	pool     *pgxpool.Pool
	log      *postgres.Log
	store    *postgres.Store // the relay's failures table
}

// logLimitCursor names the cursor of the log-limit loop. The relay's is the library's
// default (postgres.DefaultLogRelayCursor).
const logLimitCursor = "limit"

// afterMigrateLog, when not empty, is SQL run on the log's schema after migrating
// (-after-migrate-log), as afterMigrate is on ours.
var afterMigrateLog string

// logPreloadChunk is how many events one transaction of the untimed backlog appends,
// as ours writes its backlog 1,000 at a time.
const logPreloadChunk = 1000

// newLog is the log used as documented, as newOurs is the store: the business row and
// its event written in Log.Transact, which wakes this process's relays after its
// commit.
func newLog(ctx context.Context, dsn string) (system, error) {
	return openLog(ctx, dsn, "log", schemaLog, true)
}

// newLogTx is Log.AppendTx in the caller's own pgx transaction, with nothing done after
// the commit: the log sends no NOTIFY, and the relay finds the events by its head poll.
func newLogTx(ctx context.Context, dsn string) (system, error) {
	return openLog(ctx, dsn, "log-tx", schemaLogTx, false)
}

func openLog(ctx context.Context, dsn, name, schema string, transact bool) (*logSystem, error) {
	pool, err := newPool(ctx, dsn, schema, poolMaxConns)
	if err != nil {
		return nil, err
	}
	s := &logSystem{name: name, transact: transact, schema: schema, pool: pool}
	if err := s.setup(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

func (s *logSystem) setup(ctx context.Context) error {
	if err := recreateSchema(ctx, s.pool, s.schema); err != nil {
		return err
	}
	// No processor works on the events table here, so the store holds no LISTEN
	// connection that the other systems' would not.
	storeCfg := postgres.Config{Schema: s.schema, Table: oursTable, Logger: quietLogger(), DisableListen: true}
	if _, err := postgres.Migrate(ctx, s.pool, storeCfg); err != nil {
		return fmt.Errorf("migrate the events table: %w", err)
	}
	logCfg := postgres.LogConfig{Schema: s.schema}
	if _, err := postgres.MigrateLog(ctx, s.pool, logCfg); err != nil {
		return fmt.Errorf("migrate the log: %w", err)
	}
	if afterMigrateLog != "" {
		if _, err := s.pool.Exec(ctx, afterMigrateLog); err != nil {
			return fmt.Errorf("-after-migrate-log: %w", err)
		}
	}
	var err error
	if s.log, err = postgres.NewLog(ctx, s.pool, logCfg); err != nil {
		return err
	}
	s.store, err = postgres.New(ctx, s.pool, storeCfg)
	return err
}

func (s *logSystem) Name() string        { return s.name }
func (s *logSystem) Pool() *pgxpool.Pool { return s.pool }

func (s *logSystem) EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (string, error) {
	e := outboxEvent(o, false)
	if err := s.log.AppendTx(ctx, tx, e); err != nil {
		return "", err
	}
	return e.ID, nil
}

// Transact runs fn in Log.Transact when the system enqueues that way; ok is false when
// it uses the caller's own transaction instead.
func (s *logSystem) Transact(ctx context.Context, fn func(pgx.Tx) error) (ok bool, err error) {
	if !s.transact {
		return false, nil
	}
	return true, s.log.Transact(ctx, fn)
}

// Preload appends n events in transactions of logPreloadChunk, each one AppendTx of
// the whole chunk (the log's bulk path: one INSERT over arrays).
func (s *logSystem) Preload(ctx context.Context, v variant, n int) error {
	for done := 0; done < n; done += logPreloadChunk {
		events := make([]*outbox.Event, 0, min(logPreloadChunk, n-done))
		for i := range cap(events) {
			events = append(events, outboxEvent(newOrder(0, done+i), v.Keyed))
		}
		if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			return s.log.AppendTx(ctx, tx, events...)
		}); err != nil {
			return err
		}
	}
	return nil
}

// Reset empties the log and its cursors (a consumer starts a cursor at the beginning
// of the log), and the failures table.
func (s *logSystem) Reset(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE orders, outbox_log, outbox_log_cursors, `+pgx.Identifier{oursTable}.Sanitize())
	return err
}

// Consume runs a LogRelay (Run, until stopped) with v's BatchSize and MaxConcurrent,
// its defaults where they are zero, or the bare cursor loop when v.Floor.
func (s *logSystem) Consume(ctx context.Context, v variant, deliver func(string)) (func(context.Context) error, error) {
	if v.Floor {
		return s.floor(ctx, orDefault(v.BatchSize, postgres.DefaultLogRelayBatchSize), deliver)
	}
	var h outbox.Handler = outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		deliver(e.ID)
		return nil
	})
	if v.BatchHandler {
		h = batchReceiver{deliver: deliver}
	}
	relay, err := postgres.NewLogRelay(ctx, s.log, s.store, h, postgres.LogRelayConfig{
		BatchSize:     v.BatchSize,
		MaxConcurrent: v.MaxConcurrent,
		Logger:        quietLogger(),
	})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	return func(ctx context.Context) error {
		cancel()
		select {
		case err := <-done:
			if errors.Is(err, context.Canceled) {
				return nil // Run ends with its context's error: here, the stop
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("log relay did not stop: %w", ctx.Err())
		}
	}, nil
}

// floor reads batches by a cursor of its own and acknowledges them back to back, until
// a read comes back empty: what the log's own statements allow, with no relay (no
// lock, no key lookup, no transaction around a step) and no receiver.
func (s *logSystem) floor(ctx context.Context, batch int, deliver func(string)) (func(context.Context) error, error) {
	c, err := s.log.Cursor(ctx, logLimitCursor)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- readAll(ctx, c, batch, deliver) }()
	return func(context.Context) error { return <-done }, nil
}

// logReader is what readAll needs of a postgres.LogCursor.
type logReader interface {
	Read(ctx context.Context, limit int) (*postgres.LogBatch, error)
	Ack(ctx context.Context, b *postgres.LogBatch) error
}

// readAll reads and acknowledges batches of up to batch events until a read is empty,
// and hands each event's ID to deliver after its batch is acknowledged (as the table
// layout's floor settles before it tells the recorder).
func readAll(ctx context.Context, c logReader, batch int, deliver func(string)) error {
	for {
		b, err := c.Read(ctx, batch)
		if err != nil {
			return err
		}
		if len(b.Events) == 0 {
			return nil
		}
		if err := c.Ack(ctx, b); err != nil {
			return err
		}
		for _, e := range b.Events {
			deliver(e.ID)
		}
	}
}

func (s *logSystem) Close() {
	s.store.Close()
	s.pool.Close()
}

// batchReceiver is the no-op receiver as an outbox.BatchHandler: it takes a whole
// call's events at once and accepts every one.
type batchReceiver struct{ deliver func(string) }

func (r batchReceiver) Handle(_ context.Context, e outbox.Event) error {
	r.deliver(e.ID)
	return nil
}

func (r batchReceiver) HandleBatch(_ context.Context, events []outbox.Event) []error {
	for _, e := range events {
		r.deliver(e.ID)
	}
	return make([]error, len(events))
}
