package sqlite_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// BenchmarkLogRead compares taking events out of the outbox, 1,000 at a time, on the
// two layouts (docs/log-layout.md, "SQLite: measured"). Each b.N iteration is one
// round: every variant takes logReadPerRound events from a backlog written before
// the round (untimed), one batch at a time in turns, each on a database file of its
// own. Reported per variant: the median rate (events/s) and the
// median ratio of its rate to keyset's in the same round (x-keyset).
//
//	keyset  the log's limit: ReadLogQuery paging through the log by rowid, decoded,
//	        with no cursor row and no acknowledgement
//	cursor  LogCursor.Read and Ack
//	table   Store.Claim and Settle (every event completed) on today's table layout
//
// Delivery is not included: this is what each layout's bookkeeping costs per event.
func BenchmarkLogRead(b *testing.B) {
	ctx := context.Background()
	const limit = 1000
	type variant struct {
		name   string
		fill   func(n int)
		take   func() int // takes one batch; returns how many events it took
		rates  []float64
		ratios []float64
	}
	newEvents := func(n int) []*outbox.Event {
		events := make([]*outbox.Event, n)
		for i := range events {
			e := outbox.NewEvent("order.created", fmt.Sprintf("entity-%d", i), "u")
			e.Payload = []byte(`{"quantity":72.5}`)
			e.Metadata = map[string]string{"source": "manual_entry"}
			events[i] = e
		}
		return events
	}
	logVariant := func(name string) *variant {
		s := sqlitetest.NewStore(b)
		db := s.DB()
		if _, err := sqlite.MigrateLog(ctx, db); err != nil {
			b.Fatal(err)
		}
		l, err := sqlite.NewLog(ctx, db, sqlite.LogConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		v := &variant{name: name, fill: func(n int) {
			events := newEvents(n)
			for len(events) > 0 {
				chunk := events[:min(len(events), 500)]
				events = events[len(chunk):]
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.AppendTx(ctx, tx, chunk...); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		}}
		if name == "keyset" {
			// Prepared, as the cursor's read is.
			read, err := db.PrepareContext(ctx, sqlite.ReadLogQuery)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { read.Close() })
			var after int64
			v.take = func() int {
				rows, err := read.QueryContext(ctx, after, limit)
				if err != nil {
					b.Fatal(err)
				}
				events, err := sqlite.ScanLogEvents(rows)
				if err != nil {
					b.Fatal(err)
				}
				if len(events) > 0 {
					after = events[len(events)-1].Seq
				}
				return len(events)
			}
			return v
		}
		c, err := l.Cursor(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		v.take = func() int {
			batch, err := c.Read(ctx, limit)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Ack(ctx, batch); err != nil {
				b.Fatal(err)
			}
			return len(batch.Events)
		}
		return v
	}
	tableVariant := func() *variant {
		s := sqlitetest.NewStore(b)
		return &variant{name: "table",
			fill: func(n int) {
				if err := s.Enqueue(ctx, time.Now(), newEvents(n)...); err != nil {
					b.Fatal(err)
				}
			},
			take: func() int {
				now := time.Now()
				events, err := s.Claim(ctx, outbox.ClaimParams{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Minute), Limit: limit})
				if err != nil {
					b.Fatal(err)
				}
				outcomes := make([]outbox.Outcome, len(events))
				for i, e := range events {
					outcomes[i] = outbox.Outcome{ID: e.ID, Result: outbox.Delivered}
				}
				if err := s.Settle(ctx, "bench", now, outcomes); err != nil {
					b.Fatal(err)
				}
				return len(events)
			},
		}
	}
	variants := []*variant{logVariant("keyset"), logVariant("cursor"), tableVariant()}
	for _, v := range variants { // warm up: statements prepared, pages in the cache
		v.fill(limit)
		for v.take() > 0 {
		}
	}
	b.ResetTimer()
	for round := range b.N {
		b.StopTimer()
		for _, v := range variants {
			v.fill(logReadPerRound)
		}
		b.StartTimer()
		// The variants take turns batch by batch, the order rotated from turn to turn,
		// so that a change of load hits every variant alike.
		spent := make([]time.Duration, len(variants))
		for turn := range logReadPerRound / limit {
			for k := range variants {
				i := (k + turn + round) % len(variants)
				started := time.Now()
				if n := variants[i].take(); n != limit {
					b.Fatalf("%s: took %d events, want a full batch of %d", variants[i].name, n, limit)
				}
				spent[i] += time.Since(started)
			}
		}
		for i, v := range variants {
			v.rates = append(v.rates, logReadPerRound/spent[i].Seconds())
			v.ratios = append(v.ratios, spent[0].Seconds()/spent[i].Seconds())
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(logBenchMedian(v.rates), v.name+"-events/s")
		if i > 0 {
			b.ReportMetric(logBenchMedian(v.ratios), v.name+"-x-keyset")
		}
		b.Logf("%s: events/s %v, ratio to keyset %v", v.name, logBenchRounded(v.rates), logBenchRounded(v.ratios))
	}
}

// logReadPerRound is how many events each variant takes per round.
const logReadPerRound = 5000
