package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox/internal/migrate"
)

// Hooks for the log's external tests.

// ExplainRead returns the plan of the cursor's read statement for a read of shard from
// prev to next (a new snapshot when "") after (afterXID, afterSeq): the generic plan, which a
// connection settles on after its fifth read, when generic is true, and otherwise the
// plan made for these values.
func (l *Log) ExplainRead(ctx context.Context, generic bool, shard int, prev, next, afterXID string, afterSeq int64, limit int) (string, error) {
	return explainRead(ctx, l.pool, l.readLog, "(text, text, text, bigint, int, smallint)", generic, shard, prev, next, afterXID, afterSeq, limit)
}

// ExplainRead returns the plan of the relay's read (relayRead), as Log.ExplainRead does
// the cursor's, with SkipGivenUp skip.
func (r *LogRelay) ExplainRead(ctx context.Context, generic bool, shard int, prev, next, afterXID string, afterSeq int64, limit int, skip bool) (string, error) {
	return explainRead(ctx, r.log.pool, r.read, "(text, text, text, bigint, int, smallint, boolean)", generic, shard, prev, next, afterXID, afterSeq, limit, skip)
}

// explainRead prepares the read statement sql with the parameter types given and
// explains its execution with the read's arguments and then more.
func explainRead(ctx context.Context, pool *pgxpool.Pool, sql, types string, generic bool, shard int, prev, next, afterXID string, afterSeq int64, limit int, more ...any) (string, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	mode := "force_custom_plan"
	if generic {
		mode = "force_generic_plan"
	}
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
		return "", err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `RESET plan_cache_mode`)
	if _, err := conn.Exec(ctx, `PREPARE outbox_log_read `+types+` AS `+sql); err != nil {
		return "", err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `DEALLOCATE outbox_log_read`)
	var nextArg any
	if next != "" {
		nextArg = next
	}
	args := append([]any{pgx.QueryExecModeSimpleProtocol, prev, nextArg, afterXID, afterSeq, limit, shard}, more...)
	placeholders := make([]string, len(args)-1)
	for i := range placeholders {
		placeholders[i] = fmt.Sprintf("$%d", i+1)
	}
	rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE outbox_log_read (`+strings.Join(placeholders, ", ")+`)`, args...)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("explain read: %w", err)
	}
	return strings.Join(lines, "\n"), nil
}

// ScanLogRows decodes rows shaped as the cursor's read returns them (a snapshot, then
// the event's columns) as the cursor does, so that a benchmark's bare statement pays
// the same decoding.
func ScanLogRows(rows pgx.Rows) ([]LogEvent, error) {
	_, events, err := scanLogEvents(rows)
	return events, err
}

// MigrateLogTo is MigrateLog stopped at the given version, so that a test can fill a
// log of an earlier layout and then migrate it with MigrateLog.
func MigrateLogTo(ctx context.Context, pool *pgxpool.Pool, cfg LogConfig, version int) error {
	cfg = cfg.withDefaults()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	_, err = migrate.Run(ctx, logTarget{conn: conn.Conn(), schema: cfg.Schema, names: newLogNames(cfg)}, logMigrations[:version])
	return err
}

// LogShardOf is the shard of key among shards, as AppendTx computes it.
func LogShardOf(key string, shards int) int { return logShard(key, shards) }

// FNV1a32 is the standard library's FNV-1a, 32 bits, of key's bytes.
func FNV1a32(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return h.Sum32()
}

// SetRetainNoWaitFor sets how long Retain asks for a partition's lock without queueing
// (logRetainNoWaitFor), within half of MaintenanceLockTimeout.
func SetRetainNoWaitFor(l *Log, d time.Duration) { l.retainNoWait.Store(int64(d)) }

// RetainLockTries reports how many times Retain has asked for a partition's lock.
func RetainLockTries(l *Log) int64 { return l.retainLockTries.Load() }
