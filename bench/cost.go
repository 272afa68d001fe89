package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// measureCost prices the enqueue transaction of each system in CPU rather than in
// throughput (-cost): one writer, so that no lock, group commit or scheduling between
// writers enters the figure, and the systems alternate in blocks of o.costTxns
// transactions, o.costBlocks times each in a rotating order, so that whatever else the
// machine does lands on every system alike. The server's time is the backends' time on
// a CPU, in nanoseconds (procCPU), so a block of a few hundred transactions is timed to
// well under a microsecond a transaction. Ratios are taken against the first system
// within each alternation, and their medians printed. With -synchronous-commit off,
// the commit's WAL flush, the same work for every system and the noisiest part of it,
// is left to the WAL writer and out of the figure.
//
// The enqueue phase measures what eight writers reach; this measures what one
// transaction costs, which is what a change to a row's shape moves, and it does so
// with a spread of a few percent where the enqueue phase's is tens.
func measureCost(ctx context.Context, o options, out io.Writer) error {
	if err := ensureDatabase(ctx, o.dsn); err != nil {
		return err
	}
	var names []string
	for _, n := range systemOrder {
		if o.systems[n] {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return errors.New("-cost: -systems names no system to price")
	}
	systems, closeSystems, err := openSystems(ctx, o, names)
	defer closeSystems()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := systems[name].Reset(ctx); err != nil {
			return fmt.Errorf("reset %s: %w", name, err)
		}
	}
	m, err := describeMachine(ctx, systems[names[0]].Pool())
	if err != nil {
		return fmt.Errorf("describe machine: %w", err)
	}
	fmt.Fprint(out, m.header())
	fmt.Fprintf(out, "cost: 1 writer, %d blocks of %d transactions per system\n\n", o.costBlocks, o.costTxns)

	type sample struct{ server, client, wal float64 } // per transaction: µs, µs, bytes
	samples := map[string][]sample{}
	block := func(s system, n int) (sample, error) {
		pool := s.Pool()
		lsn0, err := walLSN(ctx, pool)
		if err != nil {
			return sample{}, err
		}
		cpu0 := snapCPU(ctx, pool)
		for i := range n {
			if err := placeOrder(ctx, s, newOrder(0, i)); err != nil {
				return sample{}, err
			}
		}
		self, server := snapCPU(ctx, pool).since(cpu0)
		lsn1, err := walLSN(ctx, pool)
		if err != nil {
			return sample{}, err
		}
		per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
		return sample{server: per(server), client: per(self), wal: float64(lsn1-lsn0) / float64(n)}, nil
	}
	for _, name := range names { // warm every connection's statement cache and the tables
		if _, err := block(systems[name], max(o.costTxns/5, 20)); err != nil {
			return fmt.Errorf("warm-up %s: %w", name, err)
		}
	}
	for b := range o.costBlocks {
		for _, name := range rotate(names, b) {
			sm, err := block(systems[name], o.costTxns)
			if err != nil {
				return fmt.Errorf("block %d: %s: %w", b+1, name, err)
			}
			samples[name] = append(samples[name], sm)
		}
		line := fmt.Sprintf("block %2d:", b+1)
		for _, name := range names {
			line += fmt.Sprintf("  %s %.1f µs", name, samples[name][b].server)
		}
		progress("%s", line)
		if b%4 == 3 { // keep the tables small, as the enqueue phase's are
			for _, name := range names {
				if err := systems[name].Reset(ctx); err != nil {
					return fmt.Errorf("reset %s: %w", name, err)
				}
			}
		}
	}

	base := names[0]
	fmt.Fprintf(out, "| system | server µs/txn (median) | range | ÷ %s, within blocks (median, range) | client µs/txn | WAL B/txn |\n|---|--:|--:|--:|--:|--:|\n", base)
	for _, name := range names {
		var srv, cli, wal, ratio []float64
		for b, sm := range samples[name] {
			srv, cli, wal = append(srv, sm.server), append(cli, sm.client), append(wal, sm.wal)
			ratio = append(ratio, sm.server/samples[base][b].server)
		}
		for _, xs := range [][]float64{srv, cli, wal, ratio} {
			slices.Sort(xs)
		}
		fmt.Fprintf(out, "| %s | %.1f | %.1f–%.1f | %.3f× (%.3f–%.3f) | %.1f | %.0f |\n", name,
			quantile(srv, 0.5), srv[0], srv[len(srv)-1], quantile(ratio, 0.5), ratio[0], ratio[len(ratio)-1],
			quantile(cli, 0.5), quantile(wal, 0.5))
	}
	return nil
}
