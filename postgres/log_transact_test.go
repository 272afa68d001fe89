package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/postgres"
)

// transactEnv is a log with a business table beside it, in a schema of their own.
type transactEnv struct {
	pool                    *pgxpool.Pool
	log                     *postgres.Log
	schema, logTable, notes string // quoted
}

func newTransactEnv(t *testing.T, pool *pgxpool.Pool) transactEnv {
	t.Helper()
	schema := freshSchema(t, pool)
	env := transactEnv{
		pool:     pool,
		log:      openLog(t, pool, postgres.LogConfig{Schema: schema}),
		schema:   pgx.Identifier{schema}.Sanitize(),
		logTable: pgx.Identifier{schema, "outbox_log"}.Sanitize(),
		notes:    pgx.Identifier{schema, "notes"}.Sanitize(),
	}
	if _, err := pool.Exec(context.Background(), `CREATE TABLE `+env.notes+` (id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return env
}

func (env transactEnv) appendIn(ctx context.Context, tx pgx.Tx, entity string) error {
	return env.log.AppendTx(ctx, tx, outbox.NewEvent("note.added", entity, "user-1"))
}

// logged is the entities of the committed events, in the order appended.
func (env transactEnv) logged(t *testing.T) []string {
	t.Helper()
	rows, err := env.pool.Query(context.Background(), `SELECT entity_id FROM `+env.logTable+` ORDER BY xid, seq`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (env transactEnv) noteCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := env.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+env.notes).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Transact sends an append with its COMMIT: the business write, then the event, then
// the commit cost the writer three round trips (BEGIN, the write, the event with the
// COMMIT), where the same append in a transaction of its own costs four.
func TestLogTransactSendsItsAppendsWithTheCommit(t *testing.T) {
	t.Parallel()
	pool, trips, _ := tracedPool(t, 2)
	env := newTransactEnv(t, pool)
	ctx := context.Background()
	write := func(tx pgx.Tx, id string) error {
		if _, err := tx.Exec(ctx, `INSERT INTO `+env.notes+` VALUES ($1)`, id); err != nil {
			return err
		}
		return env.appendIn(ctx, tx, id)
	}
	// Once each, so that both paths' statements are prepared before counting.
	var err error
	for i, id := range []string{"warm-transact", "warm-own"} {
		if i == 0 {
			err = env.log.Transact(ctx, func(tx pgx.Tx) error { return write(tx, id) })
		} else {
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return write(tx, id) })
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	trips.reset()
	if err := env.log.Transact(ctx, func(tx pgx.Tx) error { return write(tx, "transact") }); err != nil {
		t.Fatal(err)
	}
	if got := trips.n.Load(); got != 3 {
		t.Errorf("Transact: %d round trips (statements %q, batches %d), want 3", got, trips.alone, trips.batches)
	}
	if trips.batches != 1 || len(trips.batched) != 2 || !strings.HasPrefix(trips.batched[0], "INSERT INTO") || trips.batched[1] != "COMMIT" {
		t.Errorf("Transact: batches %d holding %q, want one: the append's INSERT, then COMMIT", trips.batches, trips.batched)
	}

	trips.reset()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return write(tx, "own") }); err != nil {
		t.Fatal(err)
	}
	if got := trips.n.Load(); got != 4 {
		t.Errorf("a transaction of the caller's own: %d round trips (%q), want 4", got, trips.alone)
	}
	if got, want := env.logged(t), []string{"warm-transact", "warm-own", "transact", "own"}; !slices.Equal(got, want) {
		t.Errorf("log holds %q, want %q", got, want)
	}
}

// What an append held for the commit does next to everything fn can do with its
// transaction: it is written exactly when it would have been written at once.
func TestLogTransactAppendsAsIfSentAtOnce(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	cases := []struct {
		name string
		fn   func(ctx context.Context, env transactEnv, tx pgx.Tx) error
		want []string
	}{
		{"appends keep their order around a savepoint of Begin", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "a"); err != nil {
				return err
			}
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := env.appendIn(ctx, sp, "b"); err != nil {
				return err
			}
			if err := sp.Commit(ctx); err != nil {
				return err
			}
			return env.appendIn(ctx, tx, "c")
		}, []string{"a", "b", "c"}},
		{"an append before a savepoint rolled back stays", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "kept"); err != nil {
				return err
			}
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := env.appendIn(ctx, sp, "undone"); err != nil {
				return err
			}
			return sp.Rollback(ctx)
		}, []string{"kept"}},
		{"a savepoint in SQL: what came before stays, what came after goes", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "before"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SAVEPOINT s`); err != nil {
				return err
			}
			if err := env.appendIn(ctx, tx, "after"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`)
			return err
		}, []string{"before"}},
		{"a read after an append sees it", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "seen"); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+env.logTable).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return errors.New("the append is not visible to the transaction's next read")
			}
			return nil
		}, []string{"seen"}},
		{"appends before a batch go first", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "first"); err != nil {
				return err
			}
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO ` + env.logTable + ` (created_at, id, type, entity_id, shard) VALUES (now(), gen_random_uuid(), 'note.added', 'second', 0)`)
			return tx.SendBatch(ctx, b).Close()
		}, []string{"first", "second"}},
		{"appends before the connection is handed out go first", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "first"); err != nil {
				return err
			}
			_, err := tx.Conn().Exec(ctx, `INSERT INTO `+env.logTable+` (created_at, id, type, entity_id, shard) VALUES (now(), gen_random_uuid(), 'note.added', 'second', 0)`)
			return err
		}, []string{"first", "second"}},
		{"several appends go in one INSERT each, in order, with the commit", func(ctx context.Context, env transactEnv, tx pgx.Tx) error {
			for _, e := range []string{"one", "two"} {
				if err := env.appendIn(ctx, tx, e); err != nil {
					return err
				}
			}
			return env.log.AppendTx(ctx, tx, outbox.NewEvent("note.added", "three", "user-1"), outbox.NewEvent("note.added", "four", "user-1"))
		}, []string{"one", "two", "three", "four"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := newTransactEnv(t, pool)
			ctx := context.Background()
			if err := env.log.Transact(ctx, func(tx pgx.Tx) error { return c.fn(ctx, env, tx) }); err != nil {
				t.Fatal(err)
			}
			if got := env.logged(t); !slices.Equal(got, c.want) {
				t.Errorf("log holds %q, want %q", got, c.want)
			}
		})
	}
}

// Nothing of a Transact is written when it fails, whether fn fails, the held append's
// INSERT fails at the commit, or fn carried on past a failed statement; the connection
// goes back to the pool usable. An append on the transaction once Transact returned is
// refused.
func TestLogTransactWritesNothingWhenItFails(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 1, "") // one connection: each case must leave it usable
	env := newTransactEnv(t, pool)
	ctx := context.Background()
	// The server refuses events of type "refused", which AppendTx cannot know.
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION `+env.schema+`.refuse() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN IF NEW.type = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON `+env.logTable+` FOR EACH ROW EXECUTE FUNCTION `+env.schema+`.refuse()`); err != nil {
		t.Fatal(err)
	}
	note := func(tx pgx.Tx, id string) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+env.notes+` VALUES ($1)`, id)
		return err
	}
	fnErr := errors.New("fn failed")
	cases := []struct {
		name    string
		fn      func(tx pgx.Tx) error
		wantErr func(error) bool
	}{
		{"fn returns an error", func(tx pgx.Tx) error {
			if err := note(tx, "n1"); err != nil {
				return err
			}
			if err := env.appendIn(ctx, tx, "e1"); err != nil {
				return err
			}
			return fnErr
		}, func(err error) bool { return errors.Is(err, fnErr) }},
		{"the held INSERT fails with the commit", func(tx pgx.Tx) error {
			if err := note(tx, "n2"); err != nil {
				return err
			}
			return env.log.AppendTx(ctx, tx, outbox.NewEvent("refused", "e2", "user-1"))
		}, func(err error) bool { return strings.Contains(err.Error(), "refused by the test") }},
		{"the held INSERT fails before Conn hands out the connection", func(tx pgx.Tx) error {
			if err := note(tx, "n3"); err != nil {
				return err
			}
			if err := env.log.AppendTx(ctx, tx, outbox.NewEvent("refused", "e3", "user-1")); err != nil {
				return err
			}
			_ = tx.Conn()
			return nil
		}, func(err error) bool { return strings.Contains(err.Error(), "refused by the test") }},
		{"fn ignores a failed statement", func(tx pgx.Tx) error {
			if err := note(tx, "n4"); err != nil {
				return err
			}
			_ = note(tx, "n4") // a duplicate key: the transaction is aborted
			return env.appendIn(ctx, tx, "e4")
		}, func(err error) bool { var pgErr *pgconn.PgError; return errors.As(err, &pgErr) }},
		{"fn ignores a failed statement after its append", func(tx pgx.Tx) error {
			if err := env.appendIn(ctx, tx, "e5"); err != nil {
				return err
			}
			_ = note(tx, "n5")
			_ = note(tx, "n5")
			return nil
		}, func(err error) bool { return errors.Is(err, pgx.ErrTxCommitRollback) }},
	}
	for _, c := range cases {
		err := env.log.Transact(ctx, c.fn)
		if err == nil || !c.wantErr(err) {
			t.Errorf("%s: Transact returned %v", c.name, err)
		}
		if got := env.logged(t); len(got) != 0 {
			t.Errorf("%s: log holds %q, want nothing", c.name, got)
		}
		if n := env.noteCount(t); n != 0 {
			t.Errorf("%s: %d notes written, want none", c.name, n)
		}
	}
	var kept pgx.Tx
	if err := env.log.Transact(ctx, func(tx pgx.Tx) error {
		kept = tx
		if err := note(tx, "ok"); err != nil {
			return err
		}
		return env.appendIn(ctx, tx, "ok")
	}); err != nil {
		t.Fatalf("after the failures: %v", err)
	}
	// An append on the transaction after Transact returned would be held and never
	// sent: it is refused, as pgx refuses a statement on a finished transaction.
	if err := env.appendIn(ctx, kept, "too-late"); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("an append after Transact returned: got %v, want pgx.ErrTxClosed", err)
	}
	if got := env.logged(t); !slices.Equal(got, []string{"ok"}) {
		t.Errorf("log holds %q, want [ok]", got)
	}
}
