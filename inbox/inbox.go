package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrExpired: the message is older than Config.Retention. Its first delivery's ID
	// may already have been cleaned up, so the inbox cannot tell a duplicate from a
	// first delivery, and refuses it: nothing is applied or recorded. A consumer
	// should not retry it (the HTTP middleware answers 410 Gone, which the outbox's
	// httpsink treats as permanent; the broker consumers terminate or reject it).
	ErrExpired = errors.New("inbox: message older than the retention window")
	// ErrNotMigrated: the inbox table is missing or older than this package; run
	// Migrate first.
	ErrNotMigrated = errors.New("inbox: schema not migrated")
)

// Result is what became of one message.
type Result int

// The results of Process and ProcessTx.
const (
	// Applied: the effect ran and its ID was recorded with it.
	Applied Result = iota + 1
	// Duplicate: the ID was already recorded; the effect did not run.
	Duplicate
	// Expired: the message was older than the retention window and was refused.
	Expired
	// Failed: the effect or the database failed; nothing was kept, and a redelivery
	// of the message will be applied. (One exception: Process's commit failed and the
	// look-up of whether it happened anyway failed too; its error says so, and a
	// redelivery is then either applied or a duplicate.)
	Failed
)

func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Expired:
		return "expired"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Observer is told what an Inbox does, for metrics. Its methods are called from the
// goroutines that process messages and must not block.
type Observer interface {
	// ObserveMessage reports one message's result and how long it took, effect
	// included (for Process, the commit too).
	ObserveMessage(r Result, d time.Duration)
	// ObserveCleanup reports one cleanup batch that deleted n IDs.
	ObserveCleanup(n int, d time.Duration)
}

// Stats counts what an Inbox has done since it was created.
type Stats struct {
	Applied    uint64 // effects applied (for ProcessTx: the caller's commit still to come)
	Duplicates uint64 // redeliveries recognised, effect skipped
	Expired    uint64 // messages refused as older than the window
	Failed     uint64 // effects or database calls that failed, rolled back
	Cleaned    uint64 // IDs deleted by Cleanup
}

// Inbox records the IDs of processed messages in the receiver's database, in the same
// transaction as each message's effect, so that a message delivered again has no
// second effect. It is safe for concurrent use.
type Inbox struct {
	db      *sql.DB
	cfg     Config
	q       queries
	applied atomic.Uint64
	dups    atomic.Uint64
	expired atomic.Uint64
	failed  atomic.Uint64
	cleaned atomic.Uint64
}

// New returns an Inbox on db, whose table Migrate has created. It fails with an error
// naming the field when cfg cannot work, and with ErrNotMigrated when the table is
// missing or older than this package.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Inbox, error) {
	if db == nil {
		return nil, argError("db", "must not be nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := checkSchema(ctx, db, cfg); err != nil {
		return nil, err
	}
	return &Inbox{db: db, cfg: cfg, q: newQueries(cfg.Dialect, cfg.Table)}, nil
}

// Config returns the inbox's configuration, defaults filled in.
func (ib *Inbox) Config() Config { return ib.cfg }

// Stats returns the inbox's counters.
func (ib *Inbox) Stats() Stats {
	return Stats{
		Applied: ib.applied.Load(), Duplicates: ib.dups.Load(), Expired: ib.expired.Load(),
		Failed: ib.failed.Load(), Cleaned: ib.cleaned.Load(),
	}
}

// ProcessTx applies fn in tx, the caller's transaction, unless msgID was processed
// before: it records msgID in tx first, then runs fn. It returns applied true when fn
// ran and returned nil; the caller then commits, and the effect and the ID are kept
// together. It returns false and nil for a duplicate, without running fn: the caller
// commits or rolls back as it likes, nothing of the message was written.
//
// An error (fn's, wrapped, or the database's) means the caller must roll tx back:
// that drops the recorded ID along with the effect, so the message is applied when it
// comes again. A message older than Config.Retention is refused with ErrExpired.
//
// If another transaction has recorded msgID and is still open (the same message
// delivered to two consumers at once), ProcessTx waits for it: when it commits this
// one is a duplicate, when it rolls back this one applies. On PostgreSQL this holds at
// every isolation level, without a serialization failure. On SQLite, a transaction
// that reads before its first write may fail with SQLITE_BUSY when another writes
// first; open it with BEGIN IMMEDIATE (sqlite.Open does, by _txlock=immediate), or
// use Process. On MySQL, InnoDB may resolve a deadlock between concurrent
// duplicates by rolling one transaction back (error 1213); Process retries that.
func (ib *Inbox) ProcessTx(ctx context.Context, tx *sql.Tx, msgID string, fn func(tx *sql.Tx) error) (applied bool, err error) {
	started := time.Now()
	r, err := ib.processTx(ctx, tx, msgID, fn)
	ib.observe(r, started)
	return r == Applied, err
}

// Process runs fn in a transaction of its own, with msgID recorded as in ProcessTx,
// and commits. It returns applied true when fn's effect was committed, false and nil
// for a duplicate (fn not run). When fn fails, the transaction, ID included, is rolled
// back and fn's error returned, so a redelivery applies the message.
//
// ctx governs the transaction until fn returns: ended before, the transaction is
// rolled back and Process fails with ctx's error. The commit itself is not cut off by
// ctx (only by a bound of its own, 30s, where the driver watches the transaction's
// context), and when the commit returns an error, Process
// looks up whether the ID was committed anyway (the reply lost, not the commit) and
// then reports Applied: the result says what the database kept.
//
// On PostgreSQL and MySQL the transaction runs at READ COMMITTED. A transaction the
// database aborted to break a deadlock or a serialization conflict is run again, up to
// three times in all, so fn may be called more than once (each time in a fresh
// transaction; only the last, committed one has an effect).
func (ib *Inbox) Process(ctx context.Context, msgID string, fn func(tx *sql.Tx) error) (applied bool, err error) {
	started := time.Now()
	var r Result
	for attempt := 1; ; attempt++ {
		r, err = ib.process(ctx, msgID, fn)
		if err == nil || attempt == maxTxAttempts || !transient(err) || ctx.Err() != nil {
			break
		}
	}
	ib.observe(r, started)
	return r == Applied, err
}

// maxTxAttempts bounds Process's runs of one message when the database aborts it.
const maxTxAttempts = 3

func (ib *Inbox) process(ctx context.Context, msgID string, fn func(tx *sql.Tx) error) (Result, error) {
	// The transaction runs under a context of its own, which ctx ends only until fn
	// has returned. The driver watches a transaction's context through its COMMIT too,
	// and a COMMIT cut off in flight (the sender hung up) still completes on the
	// server: under ctx, Process reported Failed for effects that were kept.
	txCtx, cancelTx := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTx()
	stop := context.AfterFunc(ctx, cancelTx)
	defer stop() // ctx may outlive many messages (a consumer's): unregister each time
	tx, err := ib.db.BeginTx(txCtx, ib.txOptions())
	if err != nil {
		return Failed, fmt.Errorf("inbox: begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback() // give the connection back before the panic goes on
			panic(p)
		}
	}()
	r, err := ib.processTx(ctx, tx, msgID, fn)
	if r != Applied {
		// A duplicate or an expired message wrote nothing: rolling back is the cheap end.
		_ = tx.Rollback()
		return r, err
	}
	if !stop() {
		// ctx ended before the commit: database/sql is rolling the transaction back.
		_ = tx.Rollback()
		return Failed, fmt.Errorf("inbox: message %s: not committed: %w", msgID, ctx.Err())
	}
	// From here ctx cannot end the transaction; a commit that hangs is ended by a
	// bound of its own, and its outcome then looked up like any other commit error's.
	timer := time.AfterFunc(commitTimeout, cancelTx)
	err = tx.Commit()
	timer.Stop()
	if err == nil {
		return Applied, nil
	}
	// A commit error may be about the reply alone: the server committed, then the
	// connection broke. Failed would be a lie then (and a redelivery a duplicate).
	kept, lerr := ib.committed(ctx, msgID)
	switch {
	case lerr != nil:
		return Failed, fmt.Errorf("inbox: commit %s: %w; whether it committed is unknown: %w", msgID, err, lerr)
	case kept:
		return Applied, nil
	}
	return Failed, fmt.Errorf("inbox: commit %s: %w", msgID, err)
}

// commitTimeout bounds a commit, and the look-up of its outcome, once the caller's
// context no longer can: far above any healthy commit, and short enough that a
// consumer being stopped is not held by a database that stopped answering.
const commitTimeout = 30 * time.Second

func (ib *Inbox) txOptions() *sql.TxOptions {
	if ib.cfg.Dialect == SQLite {
		return nil
	}
	// Under READ COMMITTED a concurrent duplicate waits on the key and then sees the
	// other's commit; at higher levels MySQL takes gap locks that deadlock more.
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// committed reports whether msgID is recorded, after its transaction's commit failed.
// It records msgID again in a transaction of its own and rolls that back: unlike a
// SELECT, the insert waits for a transaction still holding the ID, so a commit the
// server is still finishing (its client gone) is seen when it lands. A concurrent
// delivery of the same message that committed after ours failed is counted as ours:
// either way the message's effect is kept once.
func (ib *Inbox) committed(ctx context.Context, msgID string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	tx, err := ib.db.BeginTx(ctx, ib.txOptions())
	if err != nil {
		return false, fmt.Errorf("inbox: look up %s: %w", msgID, err)
	}
	defer func() { _ = tx.Rollback() }()
	fresh, err := ib.record(ctx, tx, msgID, ib.cfg.Clock.Now())
	if err != nil {
		return false, fmt.Errorf("inbox: look up %s: %w", msgID, err)
	}
	return !fresh, nil
}

func (ib *Inbox) processTx(ctx context.Context, tx *sql.Tx, msgID string, fn func(tx *sql.Tx) error) (Result, error) {
	if tx == nil {
		return Failed, argError("tx", "must not be nil")
	}
	if fn == nil {
		return Failed, argError("fn", "must not be nil")
	}
	if err := checkID(msgID); err != nil {
		return Failed, err
	}
	now := ib.cfg.Clock.Now()
	at := now
	if sent, ok := ib.cfg.MessageTime(msgID); ok {
		if now.Sub(sent) >= ib.cfg.Retention {
			return Expired, fmt.Errorf("%w: message %s is from %s, the window is %s", ErrExpired, msgID, sent.UTC().Format(time.RFC3339), ib.cfg.Retention)
		}
		// Counting the window from the later time keeps a message's ID for its whole
		// window even when the sender's clock runs ahead of ours.
		if sent.After(at) {
			at = sent
		}
	}
	fresh, err := ib.record(ctx, tx, msgID, at)
	if err != nil {
		return Failed, fmt.Errorf("inbox: record %s: %w", msgID, err)
	}
	if !fresh {
		return Duplicate, nil
	}
	if err := fn(tx); err != nil {
		return Failed, fmt.Errorf("inbox: message %s: %w", msgID, err)
	}
	return Applied, nil
}

// record inserts msgID in tx and reports whether it was new.
func (ib *Inbox) record(ctx context.Context, tx *sql.Tx, msgID string, at time.Time) (bool, error) {
	arg := timeArg(ib.cfg.Dialect, at)
	if ib.cfg.Dialect != Postgres {
		res, err := tx.ExecContext(ctx, ib.q.record, msgID, arg)
		if err != nil {
			return false, err
		}
		n, err := res.RowsAffected()
		return n == 1, err
	}
	var readCommitted, inserted bool
	if err := tx.QueryRowContext(ctx, ib.q.record, msgID, arg).Scan(&readCommitted, &inserted); err != nil {
		return false, err
	}
	if readCommitted {
		return inserted, nil
	}
	if _, err := tx.ExecContext(ctx, postgresSavepoint); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, ib.q.recordPlain, msgID, arg)
	if err != nil {
		if sqlState(err) != "40001" {
			return false, err
		}
		// The conflicting row was committed after this transaction's snapshot was
		// taken: the message is a duplicate. Undo the failed insert, keep the caller's
		// transaction usable.
		if _, err := tx.ExecContext(ctx, postgresRollbackTo); err != nil {
			return false, err
		}
		_, err := tx.ExecContext(ctx, postgresRelease)
		return false, err
	}
	if _, err := tx.ExecContext(ctx, postgresRelease); err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Cleanup deletes at most limit IDs whose window ended before now, oldest first, and
// returns how many it deleted. Call it until it returns fewer than limit to delete
// all; each call is one short statement, so it never holds locks on a large part of
// the table.
func (ib *Inbox) Cleanup(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, argError("limit", fmt.Sprintf("must be positive, got %d", limit))
	}
	started := time.Now()
	res, err := ib.db.ExecContext(ctx, ib.q.cleanup, timeArg(ib.cfg.Dialect, now.Add(-ib.cfg.Retention)), limit)
	if err != nil {
		return 0, fmt.Errorf("inbox: cleanup: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("inbox: cleanup: %w", err)
	}
	ib.cleaned.Add(uint64(n))
	if ib.cfg.Observer != nil {
		ib.cfg.Observer.ObserveCleanup(int(n), time.Since(started))
	}
	return int(n), nil
}

// Count returns how many IDs the inbox holds.
func (ib *Inbox) Count(ctx context.Context) (int, error) {
	var n int
	if err := ib.db.QueryRowContext(ctx, ib.q.count).Scan(&n); err != nil {
		return 0, fmt.Errorf("inbox: count: %w", err)
	}
	return n, nil
}

func (ib *Inbox) observe(r Result, started time.Time) {
	switch r {
	case Applied:
		ib.applied.Add(1)
	case Duplicate:
		ib.dups.Add(1)
	case Expired:
		ib.expired.Add(1)
	default:
		ib.failed.Add(1)
	}
	if ib.cfg.Observer != nil {
		ib.cfg.Observer.ObserveMessage(r, time.Since(started))
	}
}

func checkID(id string) error {
	if id == "" {
		return argError("msgID", "must not be empty")
	}
	if len(id) > MaxIDLength {
		return argError("msgID", fmt.Sprintf("is %d bytes, more than %d", len(id), MaxIDLength))
	}
	return nil
}
