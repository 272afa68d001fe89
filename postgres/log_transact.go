package postgres

// Log.Transact sends the transaction's appends with its COMMIT. An append is validated
// when AppendTx is called, as anywhere, but its INSERT waits in the transaction
// (logTx) until the transaction sends anything else, and is then sent first, in the
// order appended; when nothing else follows, it goes in one round trip with the
// COMMIT. The usual shape of such a transaction (the application's writes, then its
// event, then the commit) thus costs no round trip for the event, where AppendTx in
// a transaction of the caller's own costs one: the server sees the same statements in
// the same order, and the writer holds its locks one round trip less.
//
// What keeps this safe is that nothing can come between the append and its INSERT.
// Every method of the transaction that Transact hands fn (Exec, Query, QueryRow,
// SendBatch, CopyFrom, Prepare, Begin, Commit, Rollback, LargeObjects, Conn) sends the
// waiting INSERTs before it does anything, so a savepoint made or rolled back after
// an append, by Begin or by SQL, finds the append already written, as it would have
// been without the wait; and a read of the log after an append sees it.

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Transact runs fn in a transaction of the log's pool and commits it when fn returns
// nil; it rolls back when fn returns an error or panics (and panics again). Append to
// the log in fn with AppendTx, with the application's own writes: the appends are
// sent with the transaction's next statement, or with its COMMIT in one round trip
// when nothing follows them. Once the transaction has committed, this process's
// relays of l are woken (see Committed); relays in other processes find the events by
// their head poll. No NOTIFY is sent. fn's error is returned as it is.
//
// fn gets a pgx.Tx of Transact's own, which sends the waiting appends before any
// statement of fn's and before handing out its connection (Conn) or large objects;
// do not type-assert it to pgx's or pgxpool's transaction types.
func (l *Log) Transact(ctx context.Context, fn func(tx pgx.Tx) error) (err error) {
	c, err := l.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("outbox/postgres: log transact: begin: %w", err)
	}
	defer c.Release()
	inner, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox/postgres: log transact: begin: %w", err)
	}
	tx := &logTx{Tx: inner, log: l}
	defer func() {
		tx.ended = true
		if p := recover(); p != nil {
			_ = inner.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
		if err == nil {
			if err = tx.commit(ctx); err == nil {
				l.Committed()
				return
			}
		}
		// fn failed, or the commit did: an INSERT sent with it failed and left the
		// transaction aborted, or the COMMIT itself failed and ended it, when the
		// ROLLBACK only warns.
		if rbErr := inner.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
			err = errors.Join(err, fmt.Errorf("outbox/postgres: log transact: rollback: %w", rbErr))
		}
	}()
	return fn(tx)
}

// logTx is Transact's transaction: pgx's, with the INSERTs of its appends held back
// until it sends anything else (see the top of this file).
type logTx struct {
	pgx.Tx
	log     *Log
	pending []logAppend // in the order appended
	// failed is the error of sending pending where the caller could not be told
	// (Conn, LargeObjects): the commit returns it instead of committing.
	failed error
	// ended: Transact has returned, so an append held now would never be sent.
	ended bool
}

// logAppend is one INSERT of AppendTx.
type logAppend struct {
	sql  string
	args []any
}

// held reports whether tx is a Transact transaction of l that holds appends back; an
// append on it is queued by hold instead of sent.
func (l *Log) held(tx pgx.Tx) (*logTx, bool) {
	t, ok := tx.(*logTx)
	return t, ok && t.log == l
}

// hold queues an append, or refuses it once Transact has returned, as pgx refuses a
// statement on a finished transaction: held then, it would be lost without a word.
func (t *logTx) hold(sql string, args []any) error {
	if t.ended {
		return fmt.Errorf("outbox/postgres: log append: %w", pgx.ErrTxClosed)
	}
	t.pending = append(t.pending, logAppend{sql: sql, args: args})
	return nil
}

// send writes the waiting appends, in one round trip whatever their number.
func (t *logTx) send(ctx context.Context) error {
	if t.failed != nil {
		return t.failed
	}
	if len(t.pending) == 0 {
		return nil
	}
	b := t.queued()
	t.pending = nil
	return appendSent(t.Tx.SendBatch(ctx, b).Close())
}

// queued is a batch of the waiting appends, in order.
func (t *logTx) queued() *pgx.Batch {
	b := &pgx.Batch{}
	for _, a := range t.pending {
		b.Queue(a.sql, a.args...)
	}
	return b
}

// appendSent is the error of appends sent late, wrapped as AppendTx would have.
func appendSent(err error) error {
	if err == nil {
		return nil
	}
	return logAppendError(err)
}

// commit commits the transaction, with the waiting appends in the same round trip.
func (t *logTx) commit(ctx context.Context) error {
	if t.failed != nil {
		return t.failed
	}
	if len(t.pending) == 0 {
		if err := t.Tx.Commit(ctx); err != nil {
			return fmt.Errorf("outbox/postgres: log transact: commit: %w", err)
		}
		return nil
	}
	b := t.queued()
	b.Queue("COMMIT")
	br := t.Tx.Conn().SendBatch(ctx, b)
	var err error
	for range t.pending {
		if _, err = br.Exec(); err != nil {
			err = logAppendError(err)
			break
		}
	}
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err == nil && tag.String() == "ROLLBACK" {
			// The transaction had failed before (an error fn did not return): the
			// server rolled it back, as pgx's Commit reports.
			err = pgx.ErrTxCommitRollback
		}
		if err != nil {
			err = fmt.Errorf("outbox/postgres: log transact: commit: %w", err)
		}
	}
	t.pending = nil
	// Close returns again an error that a result above returned: it is news only when none did.
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("outbox/postgres: log transact: commit: %w", cerr)
	}
	return err
}

// The methods of pgx.Tx that send anything, or hand out what could: each sends the
// waiting appends first.

func (t *logTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Begin(ctx)
}

func (t *logTx) Commit(ctx context.Context) error {
	if err := t.send(ctx); err != nil {
		return err
	}
	return t.Tx.Commit(ctx)
}

func (t *logTx) Rollback(ctx context.Context) error {
	t.pending = nil // nothing of them would remain
	return t.Tx.Rollback(ctx)
}

func (t *logTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error) {
	if err := t.send(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, columns, rows)
}

func (t *logTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.send(ctx); err != nil {
		return failedBatch{err}
	}
	return t.Tx.SendBatch(ctx, b)
}

func (t *logTx) LargeObjects() pgx.LargeObjects {
	t.sendNow()
	return t.Tx.LargeObjects()
}

func (t *logTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Prepare(ctx, name, sql)
}

func (t *logTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.send(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *logTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *logTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.send(ctx); err != nil {
		return failedRow{err}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *logTx) Conn() *pgx.Conn {
	t.sendNow()
	return t.Tx.Conn()
}

// sendNow sends the waiting appends for a method that cannot return an error; one
// that fails makes the commit fail.
func (t *logTx) sendNow() {
	if err := t.send(context.Background()); err != nil && t.failed == nil {
		t.failed = err
	}
}

// failedRow and failedBatch report an error of sending the waiting appends from
// QueryRow and SendBatch, which return it later.
type failedRow struct{ err error }

func (r failedRow) Scan(...any) error { return r.err }

type failedBatch struct{ err error }

func (b failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b failedBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b failedBatch) QueryRow() pgx.Row                { return failedRow(b) }
func (b failedBatch) Close() error                     { return b.err }
func (b failedBatch) Tx() pgx.Tx                       { return nil }
