package debounce_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox/internal/debounce"
)

type flushes struct {
	mu   sync.Mutex
	got  [][]string
	alls []bool
	ch   chan struct{}
}

func (f *flushes) flush(keys map[string]struct{}, all bool) {
	f.mu.Lock()
	f.got = append(f.got, slices.Sorted(maps.Keys(keys)))
	f.alls = append(f.alls, all)
	f.mu.Unlock()
	f.ch <- struct{}{}
}

func TestFlushHandsOnWhatWasGatheredOnce(t *testing.T) {
	f := &flushes{ch: make(chan struct{}, 10)}
	b := debounce.New(time.Hour, f.flush)
	b.Add("a", "b")
	b.Add("a")
	b.Flush()
	b.Flush() // nothing new: no call
	b.AddAll()
	b.Flush()
	if len(f.got) != 2 || !slices.Equal(f.got[0], []string{"a", "b"}) || f.alls[0] || !f.alls[1] {
		t.Fatalf("flushes %v, all %v; want [a b] then all", f.got, f.alls)
	}
}

func TestRunFlushesAtOnceThenGathersDuringTheInterval(t *testing.T) {
	f := &flushes{ch: make(chan struct{}, 10)}
	b := debounce.New(time.Hour, f.flush) // the second window never ends in this test
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()

	b.Add("first")
	<-f.ch // the first key after a quiet spell goes out at once
	b.Add("x")
	b.Add("y")
	cancel()
	<-done
	b.Flush() // what the window gathered is handed on by the caller's final Flush
	if len(f.got) != 2 || !slices.Equal(f.got[0], []string{"first"}) || !slices.Equal(f.got[1], []string{"x", "y"}) {
		t.Fatalf("flushes %v; want [first] then [x y] together", f.got)
	}
}
