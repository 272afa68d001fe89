package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// measureEnqueue runs o.writers writers, each committing transactions of one business
// row and its event back to back, and counts the commits that land after the warm-up.
func measureEnqueue(ctx context.Context, s system, o options) (result, error) {
	defer releaseConns(s)
	if err := s.Reset(ctx); err != nil {
		return result{}, fmt.Errorf("reset: %w", err)
	}
	pool := s.Pool()
	lsn0, err := walLSN(ctx, pool)
	if err != nil {
		return result{}, err
	}
	cpu0 := snapCPU(ctx, pool)
	start := time.Now()
	from, until := start.Add(o.enqueueWarm), start.Add(o.enqueueWarm+o.enqueueTime)
	var (
		mu             sync.Mutex
		counted, total int
		firstErr       error
		wg             sync.WaitGroup
	)
	for w := range o.writers {
		wg.Go(func() {
			n, all := 0, 0
			var err error
			for i := 0; ; i++ {
				if time.Now().After(until) || ctx.Err() != nil {
					break
				}
				if e := placeOrder(ctx, s, newOrder(w, i)); e != nil {
					err = e
					break
				}
				all++
				if at := time.Now(); !at.Before(from) && !at.After(until) {
					n++
				}
			}
			mu.Lock()
			counted += n
			total += all
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	cpu1 := snapCPU(ctx, pool)
	lsn1, err := walLSN(ctx, pool)
	if err != nil {
		return result{}, err
	}
	tps := float64(counted) / o.enqueueTime.Seconds()
	return result{
		Phase: "Enqueue", Label: s.Name(), N: counted,
		Metrics: append([]metric{
			{"ns/op", float64(o.enqueueTime.Nanoseconds()) / float64(max(counted, 1))},
			{"txn/s", tps},
			{"WAL-B/txn", float64(lsn1-lsn0) / float64(max(total, 1))},
		}, cpuMetrics(cpu0, cpu1, total)...),
	}, nil
}

// placeOrder is the enqueue phase's transaction: the business row and its event.
func placeOrder(ctx context.Context, s system, ord order) error {
	return inTx(ctx, s, func(tx pgx.Tx) error {
		if err := insertOrder(ctx, tx, ord); err != nil {
			return err
		}
		_, err := s.EnqueueTx(ctx, tx, ord)
		return err
	})
}

// measureDrain loads a backlog of o.drainEvents (untimed), then times a consumer from
// its start until the receiver has seen every event once.
func measureDrain(ctx context.Context, s system, v variant, o options) (result, error) {
	defer releaseConns(s)
	if err := s.Reset(ctx); err != nil {
		return result{}, fmt.Errorf("reset: %w", err)
	}
	if err := s.Preload(ctx, v, o.drainEvents); err != nil {
		return result{}, fmt.Errorf("preload: %w", err)
	}
	// Fresh statistics for every system alike: the planner should see the backlog.
	if _, err := s.Pool().Exec(ctx, "ANALYZE"); err != nil {
		return result{}, fmt.Errorf("analyze: %w", err)
	}
	// Printed so that a profiler can be started on the drain alone, after the load.
	progress("  %s: %d events loaded, draining", v.Label, o.drainEvents)
	lsn0, err := walLSN(ctx, s.Pool())
	if err != nil {
		return result{}, err
	}
	rec := newRecorder(o.drainEvents)
	cpu0 := snapCPU(ctx, s.Pool())
	start := time.Now()
	stop, err := s.Consume(ctx, v, rec.deliver)
	if err != nil {
		return result{}, fmt.Errorf("start consumer: %w", err)
	}
	var waitErr error
	select {
	case <-rec.done:
	case <-time.After(o.drainTimeout):
		n, _ := rec.counts()
		waitErr = fmt.Errorf("timed out after %s with %d of %d events delivered", o.drainTimeout, n, o.drainEvents)
	case <-ctx.Done():
		waitErr = ctx.Err()
	}
	elapsed := time.Since(start)
	cpu1 := snapCPU(ctx, s.Pool())
	lsn1, lsnErr := walLSN(ctx, s.Pool())
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := errors.Join(waitErr, lsnErr, stop(stopCtx)); err != nil {
		return result{}, err
	}
	_, dups := rec.counts()
	if dups > 0 {
		progress("  %s delivered %d events twice", v.Label, dups)
	}
	return result{
		Phase: "Drain", Label: v.Label, N: o.drainEvents,
		Metrics: append([]metric{
			{"ns/op", float64(elapsed.Nanoseconds()) / float64(o.drainEvents)},
			{"events/s", float64(o.drainEvents) / elapsed.Seconds()},
			{"WAL-B/event", float64(lsn1-lsn0) / float64(o.drainEvents)},
		}, cpuMetrics(cpu0, cpu1, o.drainEvents)...),
	}, nil
}

// measureLatency runs the system's consumer at its defaults while one writer commits a
// business row and its event at random (Poisson) instants, rate a second on average;
// latency is from the return of Commit to the receiver's first sight of the event.
func measureLatency(ctx context.Context, s system, rate int, o options) (result, error) {
	defer releaseConns(s)
	if err := s.Reset(ctx); err != nil {
		return result{}, fmt.Errorf("reset: %w", err)
	}
	rec := newRecorder(1 << 62) // never "done": the writer decides how many
	stop, err := s.Consume(ctx, variant{}, rec.deliver)
	if err != nil {
		return result{}, fmt.Errorf("start consumer: %w", err)
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	lateness := watchLateness()
	claimTimes.take()
	type sent struct {
		key string
		at  time.Time
	}
	var sents []sent
	produce := func() error {
		if err := sleepCtx(ctx, o.latencyWarm); err != nil {
			return err
		}
		next := time.Now()
		end := next.Add(o.latencyTime)
		for i := 0; ; i++ {
			next = next.Add(time.Duration(rand.ExpFloat64() / float64(rate) * float64(time.Second)))
			if next.After(end) {
				break
			}
			if err := sleepCtx(ctx, time.Until(next)); err != nil {
				return err
			}
			ord := newOrder(0, i)
			var key string
			err := inTx(ctx, s, func(tx pgx.Tx) error {
				if err := insertOrder(ctx, tx, ord); err != nil {
					return err
				}
				var err error
				key, err = s.EnqueueTx(ctx, tx, ord)
				return err
			})
			if err != nil {
				return err
			}
			sents = append(sents, sent{key, time.Now()})
		}
		// Wait for the stragglers; a harness may poll, a test may not.
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, _ := rec.counts()
			if n >= len(sents) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d events delivered 30s after the last commit", n, len(sents))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := errors.Join(produce(), stop(stopCtx)); err != nil {
		return result{}, err
	}
	late := lateness()
	claims := claimTimes.take()
	if len(sents) == 0 {
		return result{}, errors.New("no event was written: -latency-time too short for the rate")
	}
	lat := make([]float64, 0, len(sents))
	var (
		slowest   time.Time // when the slowest event's commit returned, to set beside the server's log
		slowestMS = -1.0
	)
	for _, sn := range sents {
		got, ok := rec.at(sn.key)
		if !ok {
			return result{}, fmt.Errorf("event %s never delivered", sn.key)
		}
		// The receiver may see an event before Commit has returned to the writer (the
		// relay is woken by the commit itself): that is a latency of zero.
		ms := max(got.Sub(sn.at).Seconds()*1000, 0)
		if ms > slowestMS {
			slowest, slowestMS = sn.at, ms
		}
		lat = append(lat, ms)
	}
	slices.Sort(lat)
	progress("  %s: the slowest event's commit returned at %s", s.Name(), slowest.Format("15:04:05.000"))
	if len(claims) > 0 {
		progress("  %s: %d claims with events, p50 %.1f ms, p99 %.1f ms, max %.1f ms", s.Name(), len(claims), quantile(claims, 0.5), quantile(claims, 0.99), claims[len(claims)-1])
	}
	return result{
		Phase: fmt.Sprintf("Latency/rate=%d", rate), Label: s.Name(), N: len(lat),
		Metrics: []metric{
			{"p50-ms", quantile(lat, 0.50)},
			{"p90-ms", quantile(lat, 0.90)},
			{"p99-ms", quantile(lat, 0.99)},
			{"max-ms", lat[len(lat)-1]},
			{"late-p99-ms", quantile(late, 0.99)},
		},
		samples: lat,
	}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// watchLateness sleeps 1ms at a time until the returned function is called, which
// returns by how much each sleep overran (ms, sorted): the delay this process waits
// for a CPU on the shared machine, which bounds any latency measured beside it.
func watchLateness() func() []float64 {
	done := make(chan struct{})
	out := make(chan []float64, 1)
	go func() {
		var late []float64
		for {
			select {
			case <-done:
				slices.Sort(late)
				out <- late
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			late = append(late, max(time.Since(t0).Seconds()*1000-1, 0))
		}
	}()
	return func() []float64 { close(done); return <-out }
}
