package postgres

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// An enqueue sends its NOTIFY inside its transaction only when the store ran no other
// enqueue for a look interval (WatchInterval, by default 4 NotifyDebounce). A spell of
// one NotifyDebounce was too short: writers at about 1,000 transactions a second still
// found one every few transactions, and queued on PostgreSQL's notification lock behind
// each other.
func TestAnEnqueueNotifiesInsideItsTransactionOnlyAfterALookIntervalWithoutEnqueues(t *testing.T) {
	t.Parallel()
	cfg := Config{NotifyDebounce: time.Millisecond}.withDefaults()
	if got := cfg.WatchInterval; got != 4*time.Millisecond {
		t.Fatalf("look interval %s, want 4 NotifyDebounce", got)
	}
	s := &wakeups{quietSpell: cfg.WatchInterval}
	at := time.Unix(1_000_000, 0)
	for i, step := range []struct {
		after time.Duration // since the previous enqueue
		want  bool
	}{
		{0, true},                 // the store's first enqueue
		{time.Millisecond, false}, // one NotifyDebounce later: not quiet enough
		{4*time.Millisecond - time.Microsecond, false}, // just short of a look interval
		{4 * time.Millisecond, true},                   // a whole look interval without enqueues
		{2 * time.Millisecond, false},
		{time.Hour, true},
	} {
		at = at.Add(step.after)
		if got := s.notifyInTx(at); got != step.want {
			t.Errorf("enqueue %d, %s after the previous one: notifies inside its transaction %v, want %v", i, step.after, got, step.want)
		}
	}

	quiet := &wakeups{quietSpell: cfg.WatchInterval, disableNotify: true}
	if quiet.notifyInTx(at) {
		t.Error("a store with DisableNotify notified inside a transaction")
	}
}

// Each meaning NotifyDebounce used to carry has a setting of its own, and a Config that
// sets neither, or only NotifyDebounce, keeps the timings it had: the watcher's interval
// (and the quiet spell) is four NotifyDebounce unless WatchInterval is set.
func TestWakeUpSettingsKeepTheirTimingsUnlessSet(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/unused") // connects on first use, which never comes
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tc := range []struct {
		name            string
		cfg             Config
		debounce, watch time.Duration
	}{
		{"defaults", Config{}, time.Millisecond, 4 * time.Millisecond},
		{"NotifyDebounce alone", Config{NotifyDebounce: 50 * time.Millisecond}, 50 * time.Millisecond, 200 * time.Millisecond},
		{"WatchInterval alone", Config{WatchInterval: 10 * time.Millisecond}, time.Millisecond, 10 * time.Millisecond},
		{"both", Config{NotifyDebounce: 3 * time.Millisecond, WatchInterval: 2 * time.Millisecond}, 3 * time.Millisecond, 2 * time.Millisecond},
		{"a huge NotifyDebounce", Config{NotifyDebounce: math.MaxInt64 / 2}, math.MaxInt64 / 2, math.MaxInt64},
	} {
		cfg := tc.cfg.withDefaults()
		if err := cfg.validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if cfg.NotifyDebounce != tc.debounce || cfg.WatchInterval != tc.watch {
			t.Errorf("%s: NotifyDebounce %s, WatchInterval %s; want %s, %s", tc.name, cfg.NotifyDebounce, cfg.WatchInterval, tc.debounce, tc.watch)
		}
		// The store's wake-ups take both from the Config: the watcher looks, and the
		// quiet spell lasts, one WatchInterval.
		w := newWakeups(pool, newQueries(newNames(cfg), true), cfg, cfg.Logger)
		if w.watcher.interval != tc.watch || w.quietSpell != tc.watch {
			t.Errorf("%s: watcher's interval %s, quiet spell %s; want %s", tc.name, w.watcher.interval, w.quietSpell, tc.watch)
		}
		w.close()
	}
	if DefaultWatchInterval != 4*DefaultNotifyDebounce || DefaultNotifyDebounce != time.Millisecond {
		t.Errorf("DefaultNotifyDebounce %s, DefaultWatchInterval %s; want 1ms and 4ms, the timings docs/performance.md measured", DefaultNotifyDebounce, DefaultWatchInterval)
	}
}
