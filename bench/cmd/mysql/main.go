// Command mysql measures the MySQL/MariaDB store as bench's main command measures the
// PostgreSQL one, in rounds that interleave the systems (the order rotates each round)
// so that the rest of the machine weighs on each alike; ratios are taken within a round
// and their median over the rounds is reported:
//
//   - enqueue: 8 writers, each committing a business row and its event per
//     transaction: plain (the event as a bare row: key, type and payload, no index but
//     its key), outbox-tx (EnqueueTx in the caller's *sql.Tx) and outbox (Store.Transact);
//   - drain: a backlog written untimed, then delivered to a no-op handler by one
//     processor (batch 100, 2 batches in flight), in events/s.
//
// go run ./cmd/mysql [-rounds 5] [-seconds 5] [-drain 20000]; the server is
// OUTBOX_MYSQL_DSN (default root@tcp(127.0.0.1:3306)/test). Its tables are named
// after the run and dropped at the end.
package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
)

const writers = 8

func main() {
	rounds := flag.Int("rounds", 5, "rounds, each running every system once")
	seconds := flag.Int("seconds", 5, "seconds each enqueue measurement counts (after 1s of warm-up)")
	drainN := flag.Int("drain", 20000, "events in each drain's backlog")
	flag.Parse()
	ctx := context.Background()
	cfg, err := mysql.ParseDSN(cmp.Or(os.Getenv("OUTBOX_MYSQL_DSN"), "root@tcp(127.0.0.1:3306)/test"))
	if err != nil {
		log.Fatal(err)
	}
	cfg.InterpolateParams = true // one round trip per statement, as the CLI opens it
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(writers + 4)
	db.SetMaxIdleConns(writers + 4)

	table := fmt.Sprintf("outbox_bench_%d", rand.Uint32())
	scfg := mysql.Config{Table: table}
	if _, err := mysql.Migrate(ctx, db, scfg); err != nil {
		log.Fatal(err)
	}
	store, err := mysql.New(ctx, db, scfg)
	if err != nil {
		log.Fatal(err)
	}
	orders, plain := "`"+table+"_orders`", "`"+table+"_plain`"
	for _, q := range []string{
		`CREATE TABLE ` + orders + ` (id BINARY(16) PRIMARY KEY, user_id VARCHAR(64) NOT NULL, amount BIGINT NOT NULL) ENGINE = InnoDB`,
		`CREATE TABLE ` + plain + ` (id BINARY(16) PRIMARY KEY, type VARCHAR(255) NOT NULL, payload LONGBLOB NOT NULL) ENGINE = InnoDB`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	defer func() {
		store.Close()
		for _, t := range []string{orders, plain, "`" + table + "`", "`" + table + "_paused_types`", "`" + table + "_schema_migrations`"} {
			if _, err := db.ExecContext(context.Background(), `DROP TABLE IF EXISTS `+t); err != nil {
				log.Printf("drop %s: %v", t, err)
			}
		}
	}()

	// Each system writes the business row and its event in one transaction.
	enqueue := map[string]func(ctx context.Context, id uuid.UUID, payload []byte) error{
		"plain": func(ctx context.Context, id uuid.UUID, payload []byte) error {
			return inTx(ctx, db, func(tx *sql.Tx) error {
				if err := insertOrder(ctx, tx, orders, id); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `INSERT INTO `+plain+` (id, type, payload) VALUES (?, 'order.placed', ?)`, id[:], payload)
				return err
			})
		},
		"outbox-tx": func(ctx context.Context, id uuid.UUID, payload []byte) error {
			return inTx(ctx, db, func(tx *sql.Tx) error {
				if err := insertOrder(ctx, tx, orders, id); err != nil {
					return err
				}
				return store.EnqueueTx(ctx, tx, event(id, payload))
			})
		},
		"outbox": func(ctx context.Context, id uuid.UUID, payload []byte) error {
			return store.Transact(ctx, func(tx *sql.Tx) error {
				if err := insertOrder(ctx, tx, orders, id); err != nil {
					return err
				}
				return store.EnqueueTx(ctx, tx, event(id, payload))
			})
		},
	}
	names := []string{"plain", "outbox-tx", "outbox"}
	ratios := map[string][]float64{}
	var drains []float64
	for round := range *rounds {
		rates := map[string]float64{}
		for i := range names {
			name := names[(i+round)%len(names)]
			for _, t := range []string{orders, plain, "`" + table + "`"} {
				if _, err := db.ExecContext(ctx, `TRUNCATE TABLE `+t); err != nil {
					log.Fatal(err)
				}
			}
			rates[name] = measureEnqueue(ctx, enqueue[name], time.Duration(*seconds)*time.Second)
			fmt.Printf("round %d enqueue %-9s %8.0f txn/s\n", round+1, name, rates[name])
		}
		for _, name := range names[1:] {
			ratios[name] = append(ratios[name], rates[name]/rates["plain"])
		}
		d := measureDrain(ctx, db, store, table, *drainN)
		drains = append(drains, d)
		fmt.Printf("round %d drain  %d events    %8.0f events/s\n", round+1, *drainN, d)
	}
	fmt.Printf("\nmedians over %d rounds (ratios taken within each round):\n", *rounds)
	for _, name := range names[1:] {
		fmt.Printf("  enqueue %-9s %.2f× plain (rounds %.2f–%.2f)\n", name, median(ratios[name]), slices.Min(ratios[name]), slices.Max(ratios[name]))
	}
	fmt.Printf("  drain            %.0f events/s (rounds %.0f–%.0f)\n", median(drains), slices.Min(drains), slices.Max(drains))
}

func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func insertOrder(ctx context.Context, tx *sql.Tx, table string, id uuid.UUID) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (id, user_id, amount) VALUES (?, ?, ?)`, id[:], "user-7", 4250)
	return err
}

func event(id uuid.UUID, payload []byte) *outbox.Event {
	e := outbox.NewEvent("order.placed", id.String(), "user-7")
	e.Payload = payload
	return e
}

// measureEnqueue runs the writers for a second of warm-up and then d, and returns the
// transactions committed per second during d.
func measureEnqueue(ctx context.Context, enqueue func(context.Context, uuid.UUID, []byte) error, d time.Duration) float64 {
	var counting atomic.Bool
	var n atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for ctx.Err() == nil {
				id := uuid.Must(uuid.NewV7())
				payload, _ := json.Marshal(map[string]any{"order_id": id.String(), "amount": 4250, "currency": "EUR"})
				if err := enqueue(ctx, id, payload); err != nil {
					if ctx.Err() == nil {
						log.Fatal(err)
					}
					return
				}
				if counting.Load() {
					n.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Second)
	counting.Store(true)
	start := time.Now()
	time.Sleep(d)
	counted := n.Load()
	took := time.Since(start)
	cancel()
	wg.Wait()
	return float64(counted) / took.Seconds()
}

// measureDrain writes n events untimed and returns the rate one processor delivers
// them at to a handler that does nothing.
func measureDrain(ctx context.Context, db *sql.DB, store *mysql.Store, table string, n int) float64 {
	if _, err := db.ExecContext(ctx, "TRUNCATE TABLE `"+table+"`"); err != nil {
		log.Fatal(err)
	}
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for range min(1000, n-start) {
			batch = append(batch, event(uuid.Must(uuid.NewV7()), []byte(`{"amount":4250}`)))
		}
		if err := store.Enqueue(ctx, time.Now(), batch...); err != nil {
			log.Fatal(err)
		}
	}
	var delivered atomic.Int64
	done := make(chan struct{})
	h := outbox.HandlerFunc(func(context.Context, outbox.Event) error {
		if delivered.Add(1) == int64(n) {
			close(done)
		}
		return nil
	})
	p, err := outbox.NewProcessor(store, h, outbox.Config{
		BatchSize: 100, MaxConcurrent: 100, BatchesInFlight: 2, CleanupInterval: -1,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	<-done
	took := time.Since(start)
	if err := p.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	return float64(n) / took.Seconds()
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
