package mysql

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"time"

	"github.com/fitiq/outbox/internal/sqltx"
)

// inTx runs fn in a transaction of the store's own and commits it, running it again
// (a few times) when the server rolled it back to break a deadlock.
func (s *Store) inTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	for try := 1; ; try++ {
		err := sqltx.Run(ctx, s.db, opts, fn)
		if err == nil || try == 10 || !isDeadlock(err) || ctx.Err() != nil {
			return err
		}
		pause(ctx, try)
	}
}

// pause waits a little before a transaction runs again after a conflict, longer
// after each try and at random, so that the transactions that collided do not
// collide again in step.
func pause(ctx context.Context, try int) {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(try) * int64(time.Millisecond))))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
