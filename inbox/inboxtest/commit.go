package inboxtest

import (
	"context"
	"database/sql/driver"
	"sync/atomic"
)

// The interfering driver: a connector wrapper whose transactions, when begun under a
// context carrying a commitHook, let the hook do their first commit. It is how the
// suite cancels the caller's context just as the commit starts, or loses the reply of
// a commit the database did (as a connection dropped mid-COMMIT does), deterministically.

// commitHook replaces the driver's Commit of one transaction: it is given the real
// driver transaction and returns what Commit returns.
type commitHook struct {
	fired atomic.Bool
	fn    func(tx driver.Tx) error
}

type commitHookKey struct{}

// withCommitHook returns ctx carrying fn for the next transaction Process begins
// under it. The inbox derives its transaction's context from the caller's, so the
// value reaches the driver's BeginTx.
func withCommitHook(ctx context.Context, fn func(tx driver.Tx) error) context.Context {
	return context.WithValue(ctx, commitHookKey{}, &commitHook{fn: fn})
}

type hookConnector struct{ driver.Connector }

func (c hookConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return hookConn{conn}, nil
}

// hookConn passes everything on to the driver's connection; wrapping hides its
// optional interfaces, so those database/sql uses are forwarded explicitly.
type hookConn struct{ driver.Conn }

func (c hookConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var tx driver.Tx
	var err error
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		tx, err = c.Conn.Begin() // what database/sql itself falls back to
	}
	if err != nil {
		return nil, err
	}
	if h, ok := ctx.Value(commitHookKey{}).(*commitHook); ok {
		return hookTx{tx, h}, nil
	}
	return tx, nil
}

func (c hookConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Prepare(query)
}

func (c hookConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := c.Conn.(driver.ExecerContext); ok {
		return e.ExecContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (c hookConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := c.Conn.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (c hookConn) CheckNamedValue(v *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (c hookConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c hookConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

type hookTx struct {
	driver.Tx
	h *commitHook
}

func (t hookTx) Commit() error {
	if t.h.fired.CompareAndSwap(false, true) {
		return t.h.fn(t.Tx)
	}
	return t.Tx.Commit()
}
