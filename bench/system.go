package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// system is one way of getting an event out of a transaction and to a receiver: ours,
// River, Watermill, or the plain two-row transaction that bounds them all.
type system interface {
	// Name is the system as reported ("outbox", "river", …).
	Name() string
	// Pool is the system's connection pool; its connections look in the system's schema.
	Pool() *pgxpool.Pool
	// EnqueueTx writes the event announcing o inside tx and returns the key the
	// receiver will see for it.
	EnqueueTx(ctx context.Context, tx pgx.Tx, o order) (key string, err error)
	// Preload writes n events as fast as the system allows, as the consumer v will
	// find them (v.Keyed: with ordering keys); it is not timed.
	Preload(ctx context.Context, v variant, n int) error
	// Reset empties the system's tables between measurements.
	Reset(ctx context.Context) error
	// Consume starts delivering events to deliver with the given configuration and
	// returns a function that stops it. A system that cannot consume returns an error.
	Consume(ctx context.Context, v variant, deliver func(key string)) (stop func(context.Context) error, err error)
	Close()
}

// transactor is a system with a transaction helper of its own (ours: Store.Transact);
// ok is false when this system's enqueue runs in the caller's own transaction.
type transactor interface {
	Transact(ctx context.Context, fn func(pgx.Tx) error) (ok bool, err error)
}

// inTx runs fn in s's own transaction helper, or in a transaction begun on its pool.
func inTx(ctx context.Context, s system, fn func(pgx.Tx) error) error {
	if t, isT := s.(transactor); isT {
		if ok, err := t.Transact(ctx, fn); ok {
			return err
		}
	}
	return pgx.BeginFunc(ctx, s.Pool(), fn)
}

// variant is one consumer configuration. Zero fields mean the system's defaults.
type variant struct {
	// Label names the configuration in the report.
	Label string
	// Ours: processor batch size, deliveries at once per batch, batches in flight per
	// processor, processors in this process.
	BatchSize, MaxConcurrent, BatchesInFlight, Relays int
	// Ours: instead of processors, a bare loop claiming BatchSize events and settling
	// them delivered, the floor of the store's SQL (the "limit" row). The log: instead
	// of a LogRelay, a bare loop reading BatchSize events by a cursor and acknowledging
	// them (the "log-limit" row).
	Floor bool
	// Ours and the log: every event of the backlog has an ordering key, its entity.
	Keyed bool
	// The log: the LogRelay hands its batches to a BatchHandler rather than calling a
	// Handler per event (MaxConcurrent keys at once).
	BatchHandler bool
	// River: the default queue's MaxWorkers (River has no default; its docs use 100).
	Workers int
	// Watermill: the PostgreSQL schema adapter's SubscribeBatchSize (default 100).
	SubscribeBatch int
}

// order is the business row written beside every event.
type order struct {
	ID     uuid.UUID
	UserID string
	Amount int64
}

// orderPlaced is the event payload, the same JSON for every system (River marshals
// it as its job args).
type orderPlaced struct {
	OrderID  string `json:"order_id"`
	UserID   string `json:"user_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Channel  string `json:"channel"`
}

func (orderPlaced) Kind() string { return "order_placed" }

func newOrder(writer, i int) order {
	return order{ID: uuid.Must(uuid.NewV7()), UserID: fmt.Sprintf("user-%d", (writer*7919+i)%1000), Amount: int64(1000 + i%9000)}
}

func (o order) event() orderPlaced {
	return orderPlaced{OrderID: o.ID.String(), UserID: o.UserID, Amount: o.Amount, Currency: "EUR", Channel: "web"}
}

func (o order) payload() []byte {
	b, err := json.Marshal(o.event())
	if err != nil {
		panic(err) // a struct of strings and ints always marshals
	}
	return b
}

func insertOrder(ctx context.Context, tx pgx.Tx, o order) error {
	_, err := tx.Exec(ctx, insertOrderSQL, o.ID, o.UserID, o.Amount)
	return err
}

// recorder is the no-op receiver's memory: when each key first arrived, how many
// arrived twice, and a signal once every expected key has.
type recorder struct {
	mu     sync.Mutex
	first  map[string]time.Time
	dups   int
	want   int
	done   chan struct{}
	closed bool
}

func newRecorder(want int) *recorder {
	return &recorder{first: make(map[string]time.Time, want), want: want, done: make(chan struct{})}
}

func (r *recorder) deliver(key string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.first[key]; ok {
		r.dups++
		return
	}
	r.first[key] = now
	if len(r.first) >= r.want && !r.closed {
		r.closed = true
		close(r.done)
	}
}

func (r *recorder) counts() (unique, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first), r.dups
}

func (r *recorder) at(key string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.first[key]
	return t, ok
}
