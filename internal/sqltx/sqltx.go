// Package sqltx runs the database/sql transactions of a store's Transact and keeps,
// while each runs, the users its enqueues were for, so that the store wakes their
// processors once the transaction has committed, and not when it rolls back. The
// SQLite and MySQL stores share it.
package sqltx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Tracker is the set of transactions a store's Transact is running. Its zero value
// is ready to use.
type Tracker struct {
	mu   sync.Mutex
	txes map[*sql.Tx]map[string]struct{} // users enqueued for, nil until the first enqueue
}

// Transact begins a transaction of db, runs fn in it, and commits when fn returns nil;
// it rolls back when fn returns an error or panics (and panics again). After the
// commit it calls committed with the users Add recorded for the transaction, if any.
// Its own errors begin with prefix, such as "outbox/sqlite".
func (t *Tracker) Transact(ctx context.Context, db *sql.DB, prefix string, fn func(*sql.Tx) error, committed func(users map[string]struct{})) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", prefix, err)
	}
	t.mu.Lock()
	if t.txes == nil {
		t.txes = map[*sql.Tx]map[string]struct{}{}
	}
	t.txes[tx] = nil
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		users := t.txes[tx]
		delete(t.txes, tx)
		t.mu.Unlock()
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("%s: rollback: %w", prefix, rbErr))
			}
			return
		}
		if err = tx.Commit(); err != nil {
			err = fmt.Errorf("%s: commit: %w", prefix, err)
			return
		}
		if users != nil {
			committed(users)
		}
	}()
	return fn(tx)
}

// Add records users for tx when Transact is running tx, and reports whether it is.
func (t *Tracker) Add(tx *sql.Tx, users map[string]struct{}) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	own, ok := t.txes[tx]
	if !ok {
		return false
	}
	if own == nil {
		own = map[string]struct{}{}
		t.txes[tx] = own
	}
	for u := range users {
		own[u] = struct{}{}
	}
	return true
}
