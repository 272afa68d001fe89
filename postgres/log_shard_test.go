package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// Shards of the log (log_shard.go): the shard of a key, in Go and in SQL; every event
// of a key in its shard; a cursor per shard; the number of shards fixed when the log is
// made; an existing log migrated onto shards with nothing skipped or reordered.

// newShardedLog returns a migrated log of the given shards in a fresh schema of pool.
func newShardedLog(t testing.TB, pool *pgxpool.Pool, shards int) *postgres.Log {
	t.Helper()
	return openLog(t, pool, postgres.LogConfig{Schema: freshSchema(t, pool), Shards: shards})
}

// newShardedLogIn is newTestLogIn with the given shards.
func newShardedLogIn(tb testing.TB, pool *pgxpool.Pool, schema string, shards int) *postgres.Log {
	tb.Helper()
	return openLog(tb, pool, postgres.LogConfig{Schema: schema, Shards: shards})
}

// shardFunc is the SQL function the migration made: schema.outbox_log_shard.
func shardFunc(l *postgres.Log) string {
	return pgx.Identifier{l.Config().Schema, l.Config().Table + "_shard"}.Sanitize()
}

// TestLogShardHashAgreesWithSQL: ShardOf in Go and <table>_shard(key) in SQL give every
// key the same shard: fixed cases (FNV-1a's published values, mod the shards), then
// random keys of random bytes (ASCII, multi-byte UTF-8), for several shard counts.
func TestLogShardHashAgreesWithSQL(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	// FNV-1a 32: "" = 0x811c9dc5, "a" = 0xe40c292c, "foobar" = 0xbf9cf968.
	logs := map[int]*postgres.Log{}
	logOf := func(shards int) *postgres.Log {
		if logs[shards] == nil {
			logs[shards] = newShardedLog(t, pool, shards)
		}
		return logs[shards]
	}
	for _, tc := range []struct {
		key    string
		shards int
		want   int
	}{
		{"a", 7, 0xe40c292c % 7},
		{"foobar", 16, 0xbf9cf968 % 16},
		{"foobar", 256, 0xbf9cf968 % 256},
		{"foobar", 1, 0},
		{"a", 3, 0xe40c292c % 3},
	} {
		l := logOf(tc.shards)
		if got := l.ShardOf(tc.key); got != tc.want {
			t.Errorf("ShardOf(%q) of %d shards = %d, want %d", tc.key, tc.shards, got, tc.want)
		}
		var sql int
		if err := pool.QueryRow(ctx, `SELECT `+shardFunc(l)+`($1)`, tc.key).Scan(&sql); err != nil {
			t.Fatal(err)
		}
		if sql != tc.want {
			t.Errorf("%s(%q) of %d shards = %d, want %d", shardFunc(l), tc.key, tc.shards, sql, tc.want)
		}
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), 24))
	alphabet := []rune("abcXYZ019-_/:é€😀日本")
	for _, shards := range []int{3, 7, 16, 100, 256} {
		l := logOf(shards)
		keys := make([]string, 500)
		for i := range keys {
			var b strings.Builder
			for range 1 + rng.IntN(40) {
				b.WriteRune(alphabet[rng.IntN(len(alphabet))])
			}
			keys[i] = b.String()
		}
		keys = append(keys, "entity-42", strings.Repeat("x", 255))
		rows, err := pool.Query(ctx, `SELECT k, `+shardFunc(l)+`(k) FROM unnest($1::text[]) AS k`, keys)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var (
			key   string
			shard int
		)
		used := map[int]bool{}
		if _, err := pgx.ForEachRow(rows, []any{&key, &shard}, func() error {
			n++
			used[shard] = true
			if !utf8.ValidString(key) {
				return fmt.Errorf("key %q came back changed", key)
			}
			if got := l.ShardOf(key); got != shard {
				t.Errorf("%d shards: key %q: Go %d, SQL %d", shards, key, got, shard)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n != len(keys) {
			t.Fatalf("%d shards: SQL answered for %d keys of %d", shards, n, len(keys))
		}
		if shards <= 16 && len(used) != shards {
			t.Errorf("%d shards: 502 keys fell in only %d of them", shards, len(used))
		}
	}
}

// FuzzLogShard: Go's shard of any valid UTF-8 key is in range and agrees with FNV-1a as
// the standard library computes it.
func FuzzLogShard(f *testing.F) {
	for _, k := range []string{"a", "foobar", "é", "entity-1"} {
		f.Add(k, 16)
	}
	f.Fuzz(func(t *testing.T, key string, shards int) {
		if shards < 1 || shards > 256 || key == "" {
			return
		}
		got := postgres.LogShardOf(key, shards)
		if got < 0 || got >= shards {
			t.Fatalf("shard %d of %d", got, shards)
		}
		if want := postgres.FNV1a32(key) % uint32(shards); uint32(got) != want {
			t.Fatalf("LogShardOf(%q, %d) = %d, FNV-1a says %d", key, shards, got, want)
		}
	})
}

// TestLogEventsOfAKeyShareAShard: AppendTx puts every event in the shard of its
// ordering key, or of its entity when it has none, whether appended alone or in a
// batch; the column is what ShardOf and the SQL function say.
func TestLogEventsOfAKeyShareAShard(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	l := newShardedLog(t, pool, 8)
	var events []*outbox.Event
	for i := range 300 {
		e := outbox.NewEvent("order.created", fmt.Sprintf("entity-%d", i%37), "user-1")
		if i%3 != 0 {
			e.OrderingKey = fmt.Sprintf("key-%d", i%11)
		}
		events = append(events, e)
	}
	for i := 0; i < len(events); {
		n := 1 + i%5 // a single-event append, then batches
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return l.AppendTx(ctx, tx, events[i:min(i+n, len(events))]...)
		}); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	table := pgx.Identifier{l.Config().Schema, l.Config().Table}.Sanitize()
	rows, err := pool.Query(ctx, `SELECT coalesce(ordering_key, entity_id), shard, `+shardFunc(l)+`(coalesce(ordering_key, entity_id)) FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	var (
		key         string
		shard, want int
	)
	byKey := map[string]map[int]bool{}
	count := 0
	if _, err := pgx.ForEachRow(rows, []any{&key, &shard, &want}, func() error {
		count++
		if byKey[key] == nil {
			byKey[key] = map[int]bool{}
		}
		byKey[key][shard] = true
		if shard != want || shard != l.ShardOf(key) {
			t.Errorf("key %q stored in shard %d; SQL says %d, ShardOf %d", key, shard, want, l.ShardOf(key))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if count != len(events) {
		t.Fatalf("%d rows, want %d", count, len(events))
	}
	used := map[int]bool{}
	for key, shards := range byKey {
		if len(shards) != 1 {
			t.Errorf("key %q is in %d shards, want one", key, len(shards))
		}
		for s := range shards {
			used[s] = true
		}
	}
	if len(used) < 4 {
		t.Errorf("%d keys fell in only %d of 8 shards", len(byKey), len(used))
	}
}

// TestLogShardCursorsReadTheirShard: each shard's cursor reads its shard's events and
// no other, every committed event is read by exactly one of them, each transaction's
// events of a shard together and in order; Cursor refuses a sharded log.
func TestLogShardCursorsReadTheirShard(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	const shards = 4
	l := newShardedLog(t, pool, shards)
	if _, err := l.Cursor(ctx, "relay"); !errors.Is(err, postgres.ErrLogSharded) {
		t.Fatalf("Cursor on a sharded log: %v, want ErrLogSharded", err)
	}
	if _, err := l.ShardCursor(ctx, "relay", shards); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("ShardCursor of shard %d of %d: %v, want ErrInvalid", shards, shards, err)
	}
	var want []string
	open := beginTx(t, pool)
	want = append(want, appendInTx(t, l, open, "open-a", "open-b")...)
	for i := range 40 {
		want = append(want, appendCommitted(t, l, pool, fmt.Sprintf("e-%d-a", i), fmt.Sprintf("e-%d-b", i))...)
	}
	cursors := make([]*postgres.LogCursor, shards)
	for s := range cursors {
		cursors[s] = logShardCursor(t, l, "relay", s)
		if cursors[s].Name() != fmt.Sprintf("relay/%d", s) || cursors[s].Shard() != s {
			t.Fatalf("cursor %d is %q of shard %d", s, cursors[s].Name(), cursors[s].Shard())
		}
	}
	var got []postgres.LogEvent
	read := func() {
		for s, c := range cursors {
			events := drainLog(t, c, 3)
			for _, e := range events {
				if l.ShardOf(e.EntityID) != s {
					t.Errorf("cursor of shard %d read %s, of shard %d", s, e.EntityID, l.ShardOf(e.EntityID))
				}
			}
			got = append(got, events...)
		}
	}
	read()
	commitTx(t, open)
	read()
	byID := map[string]int{}
	for _, e := range got {
		byID[e.ID]++
	}
	for _, id := range want {
		if byID[id] != 1 {
			t.Errorf("event %s read %d times, want once", id, byID[id])
		}
	}
	if len(byID) != len(want) {
		t.Errorf("read %d distinct events, want %d", len(byID), len(want))
	}
	positions, err := l.CursorPositions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range positions {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"relay/0", "relay/1", "relay/2", "relay/3"}) {
		t.Errorf("CursorPositions lists %v, want each shard's cursor", names)
	}
	if err := l.DropCursor(ctx, "relay"); err != nil {
		t.Fatal(err)
	}
	if positions, err := l.CursorPositions(ctx); err != nil || len(positions) != 0 {
		t.Errorf("after DropCursor: %v, %v; want no cursor in any shard", positions, err)
	}
}

func logShardCursor(t testing.TB, l *postgres.Log, name string, shard int) *postgres.LogCursor {
	t.Helper()
	c, err := l.ShardCursor(context.Background(), name, shard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNewLogRefusesOtherShards: a log keeps the shards it was made with; NewLog (and
// MigrateLog on a made log) with another count is refused, naming the field; the
// count is validated.
func TestNewLogRefusesOtherShards(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	ctx := context.Background()
	l := newShardedLog(t, pool, 4)
	for _, shards := range []int{0, 2, 5} {
		cfg := l.Config()
		cfg.Shards = shards
		_, err := postgres.NewLog(ctx, pool, cfg)
		var fe *outbox.FieldError
		if !errors.As(err, &fe) || fe.Field != "postgres.LogConfig.Shards" || !strings.Contains(err.Error(), "made with 4 shards") {
			t.Errorf("NewLog with Shards %d on a log of 4: %v, want a FieldError on postgres.LogConfig.Shards naming 4", shards, err)
		}
	}
	for _, shards := range []int{-1, 257} {
		var fe *outbox.FieldError
		if err := (postgres.LogConfig{Shards: shards}).Validate(); !errors.As(err, &fe) || fe.Field != "postgres.LogConfig.Shards" {
			t.Errorf("Validate with Shards %d: %v, want a FieldError on postgres.LogConfig.Shards", shards, err)
		}
	}
	if err := (postgres.LogConfig{Shards: 256}).Validate(); err != nil {
		t.Errorf("256 shards: %v", err)
	}
}

// TestLogMigrationShardsAnExistingLog: a log made before shards (migrations 1 and 2),
// read partly by two cursors, one between pairs and one in the middle of a pair, with a
// transaction open across the first one's position, is migrated onto 4 shards: each
// cursor becomes one per shard at its position, and reading every shard gives exactly
// the events the cursor had not delivered, each once, each key's in the order appended;
// a writer that leaves out the shard is refused.
func TestLogMigrationShardsAnExistingLog(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 4, "")
	ctx := context.Background()
	cfg := postgres.LogConfig{Schema: freshSchema(t, pool), Shards: 4}
	if err := postgres.MigrateLogTo(ctx, pool, cfg, 2); err != nil {
		t.Fatal(err)
	}
	table := pgx.Identifier{cfg.Schema, "outbox_log"}.Sanitize()
	cursors := pgx.Identifier{cfg.Schema, "outbox_log_cursors"}.Sanitize()
	// Rows as a writer of the old layout writes them: (key, n) with n counting the
	// key's events in the order they are appended.
	next := map[string]int{}
	insert := func(tx pgx.Tx, keys ...string) []string {
		t.Helper()
		var names []string
		for _, k := range keys {
			name := fmt.Sprintf("%s/%d", k, next[k])
			next[k]++
			var key *string
			if !strings.HasPrefix(k, "nokey") {
				key = &k
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+table+` (created_at, id, type, entity_id, ordering_key)
				VALUES (now(), gen_random_uuid(), 'order.created', $1, $2)`, name, key); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		return names
	}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "nokey-a", "nokey-b"}
	commit := func(n int) []string {
		t.Helper()
		var names []string
		for i := range n {
			tx := beginTx(t, pool)
			names = append(names, insert(tx, keys[i%len(keys)], keys[(i+3)%len(keys)])...)
			commitTx(t, tx)
		}
		return names
	}
	delivered := commit(10)
	open := beginTx(t, pool)
	openNames := insert(open, "k1", "k2")
	var between string
	if err := pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&between); err != nil {
		t.Fatal(err)
	}
	// "between" has delivered everything committed so far; the open transaction is in
	// its list of running ones.
	if _, err := pool.Exec(ctx, `INSERT INTO `+cursors+` (name, snapshot) VALUES ('between', $1)`, between); err != nil {
		t.Fatal(err)
	}
	later := commit(6)
	commitTx(t, open)
	last := commit(4)
	// "split" is in the middle of the pair from the start to now, having delivered the
	// first seven events of it in (xid, seq) order.
	var now, afterXID string
	var afterSeq int64
	if err := pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT xid::text, seq FROM `+table+` ORDER BY xid, seq OFFSET 6 LIMIT 1`).Scan(&afterXID, &afterSeq); err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, `SELECT entity_id FROM `+table+` ORDER BY xid, seq`)
	inOrder, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+cursors+` (name, snapshot, next, after_xid, after_seq)
		VALUES ('split', '1:1:', $1, $2::text::xid8, $3)`, now, afterXID, afterSeq); err != nil {
		t.Fatal(err)
	}
	added := commit(3) // after the pair: the split cursor reads them in its next pair

	if _, err := postgres.MigrateLog(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := postgres.NewLog(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (created_at, id, type, entity_id) VALUES (now(), gen_random_uuid(), 'order.created', 'no-shard')`); err == nil {
		t.Error("an INSERT without the shard was accepted by a log of 4 shards")
	}
	for _, tc := range []struct {
		cursor string
		want   []string
	}{
		{"between", slices.Concat(openNames, later, last, added)},
		{"split", slices.Concat(inOrder[7:], added)},
	} {
		var got []string
		for s := range 4 {
			c := logShardCursor(t, l, tc.cursor, s)
			for _, e := range drainLog(t, c, 2) {
				key, _, _ := strings.Cut(e.EntityID, "/")
				if strings.HasPrefix(key, "nokey") {
					key = e.EntityID // no ordering key: the entity's shard
				}
				if l.ShardOf(key) != s {
					t.Errorf("%s: %s read from shard %d, want %d", tc.cursor, e.EntityID, s, l.ShardOf(key))
				}
				got = append(got, e.EntityID)
			}
		}
		if !sameSet(got, tc.want) || len(got) != len(tc.want) {
			t.Errorf("%s read %v\nwant each of %v once", tc.cursor, got, tc.want)
		}
		for _, d := range delivered {
			if tc.cursor == "between" && slices.Contains(got, d) {
				t.Errorf("%s read %s again, delivered before the migration", tc.cursor, d)
			}
		}
		// Each key's events in the order appended.
		seen := map[string]int{}
		for _, name := range got {
			k, n, _ := strings.Cut(name, "/")
			if strings.HasPrefix(k, "nokey") {
				continue
			}
			var i int
			fmt.Sscan(n, &i)
			if prev, ok := seen[k]; ok && i <= prev {
				t.Errorf("%s: %s read after %s/%d", tc.cursor, name, k, prev)
			}
			seen[k] = i
		}
	}
	positions, err := l.CursorPositions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(positions) != 8 {
		t.Errorf("%d cursor positions after the migration, want 2 cursors × 4 shards", len(positions))
	}
}

// TestLogRetainCountsEveryShard: on a log of 2 shards, a cursor read to the end in one
// shard and not at all in the other holds every partition (the lagging shard's
// position is the horizon); once both shards are read, the partitions go.
func TestLogRetainCountsEveryShard(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 4, "")
	cfg := ringConfig
	cfg.Shards = 2
	l := newRingLog(t, pool, cfg)
	// Entities that fall in each shard.
	var entities []string
	inShard := [2]int{}
	for i := 0; inShard[0] < 2 || inShard[1] < 2; i++ {
		e := fmt.Sprintf("e-%d", i)
		if s := l.ShardOf(e); inShard[s] < 2 {
			inShard[s]++
			entities = append(entities, e)
		}
	}
	var xids []uint64
	for _, e := range entities {
		xids = append(xids, appendXID(t, l, pool, e))
		burnXIDs(t, pool, 128)
	}
	waitForRunningPast(t, pool, headXID(t, pool))
	read, lagging := logShardCursor(t, l, "relay", 0), logShardCursor(t, l, "relay", 1)
	drainLog(t, read, 100)

	r := retainAll(t, l)
	if r.HeldBy != "relay/1" || len(r.Truncated) != 0 {
		t.Fatalf("Retain with shard 1 unread: held by %q, truncated %v; want held by relay/1, nothing truncated", r.HeldBy, partitionNames(r.Truncated))
	}
	drainLog(t, lagging, 100)
	r = retainAll(t, l)
	if !ringCameRound(t, l, pool, xids[0]) {
		var want []string
		for _, x := range xids {
			want = append(want, partitionOf(l, x))
		}
		slices.Sort(want)
		if got := partitionNames(r.Truncated); !slices.Equal(got, want) {
			t.Errorf("once both shards were read, Retain truncated %v, want %v", got, want)
		}
	}
}
