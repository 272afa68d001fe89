package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ours is this project: postgres.Store.EnqueueTx in the business transaction, and
// outbox.Processor relays (woken by NOTIFY) delivering to the receiver.
type ours struct {
	name     string
	transact bool // enqueue through Store.Transact rather than the caller's own transaction
	schema   string
	pool     *pgxpool.Pool
	store    *postgres.Store
	cfg      postgres.Config
}

const oursTable = "outbox_events"

// fillFactor, when not 0, is set on our tables after migrating (-fillfactor): a lever
// measured for the drain's non-HOT updates, not a setting the store's migrations make.
var fillFactor int

// afterMigrate, when not empty, is SQL run on our schema after migrating
// (-after-migrate): how the cost of one index or constraint is measured, by running
// without it. It is an experiment's tool; the store needs every index it creates.
var afterMigrate string

// newOurs is the store used as documented: the business row and its event written in
// Store.Transact, which notifies after its commit (inside it, after a quiet spell).
func newOurs(ctx context.Context, dsn string) (system, error) {
	return openOurs(ctx, dsn, "outbox", schemaOurs, true, postgres.Config{})
}

// newOursTx is EnqueueTx in the caller's own pgx transaction: the NOTIFY goes inside
// it, and PostgreSQL delivers it at commit.
func newOursTx(ctx context.Context, dsn string) (system, error) {
	return openOurs(ctx, dsn, "outbox-tx", schemaOursTx, false, postgres.Config{})
}

// newOursNoNotify is the caller's-transaction path with Config.DisableNotify: it shows
// what the NOTIFY inside the transaction costs (relays then find events at their next
// poll).
func newOursNoNotify(ctx context.Context, dsn string) (system, error) {
	return openOurs(ctx, dsn, "outbox-nonotify", schemaOursNN, false, postgres.Config{DisableNotify: true})
}

func openOurs(ctx context.Context, dsn, name, schema string, transact bool, cfg postgres.Config) (system, error) {
	pool, err := newPool(ctx, dsn, schema, poolMaxConns)
	if err != nil {
		return nil, err
	}
	cfg.Schema, cfg.Table, cfg.Logger = schema, oursTable, quietLogger()
	s := &ours{name: name, transact: transact, schema: schema, pool: pool, cfg: cfg}
	if err := s.setup(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

func (s *ours) setup(ctx context.Context) error {
	if err := recreateSchema(ctx, s.pool, s.schema); err != nil {
		return err
	}
	if _, err := postgres.Migrate(ctx, s.pool, s.cfg); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if fillFactor != 0 {
		q := fmt.Sprintf("ALTER TABLE %s SET (fillfactor = %d)", pgx.Identifier{oursTable}.Sanitize(), fillFactor)
		if _, err := s.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("fillfactor: %w", err)
		}
	}
	if afterMigrate != "" {
		if _, err := s.pool.Exec(ctx, afterMigrate); err != nil {
			return fmt.Errorf("-after-migrate: %w", err)
		}
	}
	var err error
	s.store, err = postgres.New(ctx, s.pool, s.cfg)
	return err
}

func (s *ours) Name() string        { return s.name }
func (s *ours) Pool() *pgxpool.Pool { return s.pool }

// outboxEvent is the event announcing o, as ours and the log write it; keyed gives it
// its entity as its ordering key, as an application that orders by entity does.
func outboxEvent(o order, keyed bool) *outbox.Event {
	e := outbox.NewEvent("orderPlaced", o.ID.String(), o.UserID)
	e.Payload = o.payload()
	if keyed {
		e.OrderingKey = e.EntityID
	}
	return e
}

func (s *ours) EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (string, error) {
	e := outboxEvent(o, false)
	if err := s.store.EnqueueTx(ctx, tx, e); err != nil {
		return "", err
	}
	return e.ID, nil
}

// Transact runs fn in Store.Transact when the system enqueues that way; ok is false
// when it uses the caller's own transaction instead.
func (s *ours) Transact(ctx context.Context, fn func(pgx.Tx) error) (ok bool, err error) {
	if !s.transact {
		return false, nil
	}
	return true, s.store.Transact(ctx, fn)
}

func (s *ours) Preload(ctx context.Context, v variant, n int) error {
	const chunk = 1000
	for done := 0; done < n; done += chunk {
		events := make([]*outbox.Event, 0, min(chunk, n-done))
		for i := range cap(events) {
			events = append(events, outboxEvent(newOrder(0, done+i), v.Keyed))
		}
		if err := s.store.Enqueue(ctx, time.Now(), events...); err != nil {
			return err
		}
	}
	return nil
}

func (s *ours) Reset(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE orders, `+pgx.Identifier{oursTable}.Sanitize())
	return err
}

func (s *ours) Consume(ctx context.Context, v variant, deliver func(string)) (func(context.Context) error, error) {
	h := outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		deliver(e.ID)
		return nil
	})
	if v.Floor {
		return s.floor(ctx, v.BatchSize, deliver), nil
	}
	var procs []*outbox.Processor
	stop := func(ctx context.Context) error {
		var errs []error
		for _, p := range procs {
			errs = append(errs, p.Stop(ctx))
		}
		return errors.Join(errs...)
	}
	for range max(v.Relays, 1) {
		p, err := outbox.NewProcessor(s.store, h, outbox.Config{
			BatchSize:       v.BatchSize,
			MaxConcurrent:   v.MaxConcurrent,
			BatchesInFlight: v.BatchesInFlight,
			Logger:          quietLogger(),
			Observers:       []outbox.Observer{claimTimes},
		})
		if err != nil {
			return nil, errors.Join(err, stop(ctx))
		}
		if err := p.Start(ctx); err != nil {
			return nil, errors.Join(err, stop(ctx))
		}
		procs = append(procs, p)
	}
	return stop, nil
}

func (s *ours) Close() {
	s.store.Close()
	s.pool.Close()
}

// floor claims and settles batches back to back in one loop until a claim comes back
// empty: what the store's own statements allow, with no processor around them.
func (s *ours) floor(ctx context.Context, batch int, deliver func(string)) func(context.Context) error {
	done := make(chan error, 1)
	go func() {
		for {
			now := time.Now()
			events, err := s.store.Claim(ctx, outbox.ClaimParams{Owner: "limit", Now: now, LeaseUntil: now.Add(time.Minute), Limit: max(batch, 1)})
			if err != nil || len(events) == 0 {
				done <- err
				return
			}
			outcomes := make([]outbox.Outcome, len(events))
			for i, e := range events {
				outcomes[i] = outbox.Outcome{ID: e.ID, Result: outbox.Delivered}
			}
			if err := s.store.Settle(ctx, "limit", time.Now(), outcomes); err != nil {
				done <- err
				return
			}
			for _, e := range events {
				deliver(e.ID)
			}
		}
	}()
	return func(context.Context) error { return <-done }
}

// claimTimes records how long each claim of our processors took (ms), for the latency
// phase's breakdown.
var claimTimes = &claimObserver{}

type claimObserver struct {
	mu sync.Mutex
	ms []float64
}

func (c *claimObserver) ObserveClaim(n int, d time.Duration) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.ms = append(c.ms, d.Seconds()*1000)
	c.mu.Unlock()
}

func (c *claimObserver) ObserveDelivery(outbox.Event, outbox.Outcome, time.Duration) {}

// take returns the claim times recorded since the last call, sorted.
func (c *claimObserver) take() []float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.ms
	c.ms = nil
	slices.Sort(ms)
	return ms
}
