// Package sqltx runs the transactions of a store's Transact and keeps, while each
// runs, what its enqueues were for, so that the store wakes their processors once
// the transaction has committed, and not when it rolls back. TrackerOf is generic
// over the transaction's type and over that record: the PostgreSQL store uses it for
// its pgx transactions; Tracker is TrackerOf for database/sql, which the SQLite and
// MySQL stores share, as they share Run for their own short transactions.
package sqltx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Tracker is the set of database/sql transactions a store's Transact is running, and
// the users each enqueued for. Its zero value is ready to use.
type Tracker struct {
	txes TrackerOf[*sql.Tx, map[string]struct{}]
}

// Transact begins a transaction of db, runs fn in it, and commits when fn returns nil;
// it rolls back when fn returns an error or panics (and panics again). After the
// commit it calls committed with the users Add recorded for the transaction, if any.
// Its own errors begin with prefix, such as "outbox/sqlite".
func (t *Tracker) Transact(ctx context.Context, db *sql.DB, prefix string, fn func(*sql.Tx) error, committed func(users map[string]struct{})) error {
	begin := func(ctx context.Context) (*sql.Tx, error) { return db.BeginTx(ctx, nil) }
	return t.txes.Transact(ctx, begin, sqlEnd, prefix, fn, func(users *map[string]struct{}) { committed(*users) })
}

// sqlEnd ends database/sql transactions, which take no context to.
var sqlEnd = End[*sql.Tx]{
	Commit:   func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
	Rollback: func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() },
	Done:     sql.ErrTxDone,
}

// Add records users for tx when Transact is running tx, and reports whether it is.
func (t *Tracker) Add(tx *sql.Tx, users map[string]struct{}) bool {
	return t.txes.Add(tx, func(own *map[string]struct{}) {
		if *own == nil {
			*own = map[string]struct{}{}
		}
		for u := range users {
			(*own)[u] = struct{}{}
		}
	})
}

// End is how TrackerOf.Transact ends a transaction of type Tx.
type End[Tx any] struct {
	Commit   func(ctx context.Context, tx Tx) error
	Rollback func(ctx context.Context, tx Tx) error // given a context that is never cancelled
	Done     error                                  // what Rollback returns for a transaction already ended
}

// TrackerOf is the set of transactions of type Tx a store's Transact is running, each
// with a record R of what its enqueues were for. Its zero value is ready to use.
type TrackerOf[Tx comparable, R any] struct {
	mu   sync.Mutex
	txes map[Tx]*R // nil until the first Add
}

// Transact begins a transaction with begin, runs fn in it, and commits it with end
// when fn returns nil; it rolls back when fn returns an error or panics (and panics
// again). After the commit it calls committed with the record Add kept for the
// transaction, if Add was called for it. Its own errors begin with prefix, such as
// "outbox/postgres".
func (t *TrackerOf[Tx, R]) Transact(ctx context.Context, begin func(context.Context) (Tx, error), end End[Tx], prefix string, fn func(Tx) error, committed func(*R)) (err error) {
	tx, err := begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", prefix, err)
	}
	t.mu.Lock()
	if t.txes == nil {
		t.txes = map[Tx]*R{}
	}
	t.txes[tx] = nil
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		own := t.txes[tx]
		delete(t.txes, tx)
		t.mu.Unlock()
		if p := recover(); p != nil {
			_ = end.Rollback(context.WithoutCancel(ctx), tx)
			panic(p)
		}
		if err != nil {
			if rbErr := end.Rollback(context.WithoutCancel(ctx), tx); rbErr != nil && !errors.Is(rbErr, end.Done) {
				err = errors.Join(err, fmt.Errorf("%s: rollback: %w", prefix, rbErr))
			}
			return
		}
		if err = end.Commit(ctx, tx); err != nil {
			err = fmt.Errorf("%s: commit: %w", prefix, err)
			return
		}
		if own != nil {
			committed(own)
		}
	}()
	return fn(tx)
}

// Running reports whether Transact is running tx.
func (t *TrackerOf[Tx, R]) Running(tx Tx) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.txes[tx]
	return ok
}

// Add updates the record of tx with record (given the zero R on the first Add) when
// Transact is running tx, and reports whether it is. record runs under the tracker's
// lock.
func (t *TrackerOf[Tx, R]) Add(tx Tx, record func(*R)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	own, ok := t.txes[tx]
	if !ok {
		return false
	}
	if own == nil {
		own = new(R)
		t.txes[tx] = own
	}
	record(own)
	return true
}

// Run begins a transaction of db with opts, runs fn in it, and commits it when fn
// returns nil; it rolls back when fn returns an error. It is for a store's own short
// transactions, whose fn does not panic; Transact is for the caller's.
func Run(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
