package postgres

// Shards of the log (issue 24, docs/log-layout.md "Shards"). Every event belongs to one
// shard, chosen by its ordering key, or by its entity when it has none, so that all the
// events of a key are in one shard. Each shard has a cursor of its own for every cursor
// name, and a relay delivers a shard while it holds that shard's lock: relays in any
// number of processes share the shards, one relay at a time per shard, so a key's events
// are delivered in order by one relay at a time.
//
// The word is "shard" throughout, because "partition" already names the retention
// ring's tables (log_retention.go); the two are independent: a partition holds every
// shard's events of its xids.
//
// The shard of a key is FNV-1a (32 bits) of the key's UTF-8 bytes, modulo the number of
// shards. The function is fixed: every appender, in Go or in SQL (the migration creates
// <table>_shard(key text) that computes the same), must agree with every other one and
// with what is already stored, for as long as the log lives.

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
)

const (
	// DefaultLogShards is LogConfig.Shards' default: one shard, delivered by one relay
	// at a time. On two cores, 4 and 16 shards drained at 0.7-0.95x of one, with one
	// relay or two (docs/log-layout.md "Shards"); shards pay where one relay's process
	// is the limit (a sink of 1 ms a call, one call at a time per process: four relays
	// on 4 shards drained at 3.4-3.6x one) or relays run on several machines, and the
	// count cannot change once the log is made.
	DefaultLogShards = 1

	maxLogShards = 256
)

// ErrLogSharded is returned by Log.Cursor on a log of more than one shard: each shard
// has its own position, so a cursor reads one shard (Log.ShardCursor).
var ErrLogSharded = errors.New("outbox/postgres: the log has more than one shard: use ShardCursor")

// logShard returns the shard of key among shards: FNV-1a, 32 bits, of key's bytes (Go
// strings are the UTF-8 the database stores), modulo shards. The SQL function the
// migration creates computes the same; TestLogShardHashAgreesWithSQL holds them to it.
func logShard(key string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(shards))
}

// ShardOf returns the shard the log puts an event of the given key in: the event's
// ordering key, or its entity ID when it has none. Writers in other languages get the
// same from SQL: <table>_shard(key).
func (l *Log) ShardOf(key string) int { return logShard(key, l.cfg.Shards) }

// eventShard is the shard of an event: by its ordering key, else by its entity.
func (l *Log) eventShard(e *outbox.Event) int16 {
	key := e.OrderingKey
	if key == "" {
		key = e.EntityID
	}
	return int16(logShard(key, l.cfg.Shards))
}

func (c LogConfig) validateShards() error {
	if c.Shards < 1 || c.Shards > maxLogShards {
		return logConfigError("Shards", fmt.Sprintf("must be from 1 to %d, got %d", maxLogShards, c.Shards))
	}
	return nil
}

// cursorRow is the name of the cursors table's row that holds the position of cursor
// name in the given shard: the name itself on a log of one shard (as before shards),
// name/shard otherwise.
func (l *Log) cursorRow(name string, shard int) string {
	if l.cfg.Shards == 1 {
		return name
	}
	return name + "/" + strconv.Itoa(shard)
}

// logShardsQuery reads the number of shards the log was made with, from the function
// its migration created.
const logShardsQuery = `SELECT {{shards}}()`

// checkShards refuses a config whose Shards is not the log's: an appender with
// another count would put a key's events in another shard than the relays read it from.
func (l *Log) checkShards(ctx context.Context) error {
	var stored int
	if err := l.pool.QueryRow(ctx, l.n.render(logShardsQuery)).Scan(&stored); err != nil {
		return fmt.Errorf("outbox/postgres: read the log's shards: %w", err)
	}
	if stored != l.cfg.Shards {
		return logConfigError("Shards", fmt.Sprintf("is %d, but %s was made with %d shards; a log keeps the shards it was made with", l.cfg.Shards, l.n.Table, stored))
	}
	return nil
}

// ShardCursor returns the cursor of the given name in one shard, creating it at the
// start of the log when there is none. Each shard of a name has its own position; a
// LogRelay reads them all. On a log of one shard, ShardCursor(ctx, name, 0) is
// Cursor(ctx, name).
func (l *Log) ShardCursor(ctx context.Context, name string, shard int) (*LogCursor, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: log cursor name must not be empty", outbox.ErrInvalid)
	}
	if shard < 0 || shard >= l.cfg.Shards {
		return nil, fmt.Errorf("%w: log cursor %q: shard %d is not one of the log's %d", outbox.ErrInvalid, name, shard, l.cfg.Shards)
	}
	row := l.cursorRow(name, shard)
	if _, err := l.pool.Exec(ctx, l.createCursor, row, firstSnapshot, shard); err != nil {
		return nil, fmt.Errorf("outbox/postgres: create log cursor %q: %w", row, err)
	}
	c := &LogCursor{log: l, name: row, shard: int16(shard)}
	if err := c.load(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrLogKeyLockLate is returned by LockKeyTx in a transaction that has already
// written: its transaction ID is taken, and the order of its events against other
// writers of the key is no longer what LockKeyTx promises.
var ErrLogKeyLockLate = errors.New("outbox/postgres: LockKeyTx must come before the transaction's first write")

// lockKey takes a key's lock for the transaction, waiting for it, and tells whether
// the transaction had no ID (had not written) when it got it. The lock's first key is
// the log's table, so that it shares nothing with the relays' locks of the cursors
// table.
const lockKey = `SELECT pg_current_xact_id_if_assigned() IS NULL
FROM pg_advisory_xact_lock(hashtext($1), hashtext($2))`

// LockKeyTx makes tx wait until no other transaction holds the lock of key (an ordering
// key, or an entity), and holds it until tx ends. Call it before tx's first write.
//
// Why: a cursor delivers the events of transactions that commit between two of its
// reads by transaction ID, which PostgreSQL assigns at a transaction's first write, not
// at its commit (see LogCursor). Two writers of one key whose transactions overlap may
// then be delivered in the order they first wrote, which is not the order in which one
// saw the other's change. A writer that takes the key's lock before it writes anything
// has no transaction ID while it waits, so it gets one after the holder committed, and
// its events come after the holder's. A lock of the entity's row (SELECT … FOR UPDATE)
// taken before the transaction's first write serves as well: PostgreSQL 15 assigns the
// waiter its ID only once it holds the row lock. What does not serve is a lock taken
// after a write. Writers that never overlap on a key need nothing of this.
//
// It fails with ErrLogKeyLockLate, after taking the lock, when tx has already written.
func (l *Log) LockKeyTx(ctx context.Context, tx pgx.Tx, key string) error {
	if tx == nil {
		return fmt.Errorf("%w: LockKeyTx: tx must not be nil", outbox.ErrInvalid)
	}
	var fresh bool
	if err := tx.QueryRow(ctx, lockKey, l.n.Table, key).Scan(&fresh); err != nil {
		return fmt.Errorf("outbox/postgres: lock log key: %w", err)
	}
	if !fresh {
		return ErrLogKeyLockLate
	}
	return nil
}
