package dashboard

import (
	"context"
	"sync"
	"time"

	"github.com/fitiq/outbox"
)

// overviewCache holds the last overview computed, shared by every viewer: the figures
// are the same for all, and on a large outbox computing them costs the database more
// than rendering them (a count of the completed events reads their whole index). A
// request finds them at most Config.RefreshInterval old; an older copy is served as
// it is (the page says when it was taken) while one refresh runs in the background, so
// that only the first request after a start, or after an action, waits for the store.
type overviewCache struct {
	mu         sync.Mutex
	cur        *overview
	taken      time.Time // when cur was computed, by the wall clock (not Config.Clock)
	refreshing bool
	gen        int // bumped by invalidate, so that a refresh begun before it is dropped
}

// refreshTimeout bounds a background refresh.
const refreshTimeout = 30 * time.Second

func (h *Handler) cachedOverview(ctx context.Context) (overview, error) {
	c := &h.cache
	c.mu.Lock()
	if c.cur != nil {
		o := *c.cur
		if time.Since(c.taken) >= h.cfg.RefreshInterval && !c.refreshing {
			c.refreshing = true
			go h.refreshOverview(c.gen)
		}
		c.mu.Unlock()
		return o, nil
	}
	c.mu.Unlock()
	o, err := h.overview(ctx)
	if err != nil {
		return o, err
	}
	c.mu.Lock()
	c.cur, c.taken = &o, time.Now()
	c.mu.Unlock()
	return o, nil
}

func (h *Handler) refreshOverview(gen int) {
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	o, err := h.overview(ctx)
	c := &h.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing = false
	if err != nil {
		h.log.Warn("refreshing the overview failed; showing the last figures", "err", err)
		return
	}
	if gen == c.gen {
		c.cur, c.taken = &o, time.Now()
	}
}

// invalidate drops the cached overview after an action changed the store, so that the
// next overview shows its effect.
func (h *Handler) invalidate() {
	c := &h.cache
	c.mu.Lock()
	c.cur = nil
	c.gen++
	c.mu.Unlock()
	h.completions.reset() // a discard may have removed completed events
	h.counts.reset()
}

// completionsCache keeps the completions of minutes already counted for the chart. A
// past minute's completions do not change, so each overview asks the store only for
// those of the last few minutes (outbox.TimelineQuery.CompletedSince), instead of
// counting the whole window's again: at a hundred events a second, an hour is 360,000
// index entries.
type completionsCache struct {
	mu     sync.Mutex
	counts map[int64]int // minute (Unix seconds) → events completed in it
	until  time.Time     // the minutes before this one are in counts
}

// completionsSettle is how long after a minute ends its completions are still read
// from the store: a relay records a completion at a time it takes before its
// transaction commits, and the relays' clocks differ from ours by a little.
const completionsSettle = 2 * time.Minute

// since returns where the store's count of completions must start for a window
// beginning at since and ending at until.
func (c *completionsCache) since(since, until time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.until.Before(since) || c.until.After(until) { // nothing kept in the window, or the clock went back
		c.counts, c.until = nil, since
	}
	return c.until
}

// merge fills the completions of the minutes before from (which the store did not
// count) from the cache, and keeps those of the minutes now closed.
func (c *completionsCache) merge(dense []outbox.TimelineBucket, since, from, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	closed := until.Add(-time.Minute - completionsSettle).Truncate(time.Minute)
	if c.counts == nil {
		c.counts = map[int64]int{}
	}
	for i := range dense {
		m := dense[i].Minute
		switch {
		case m.Before(from):
			dense[i].Completed = c.counts[m.Unix()]
		case m.Before(closed):
			c.counts[m.Unix()] = dense[i].Completed
		}
	}
	for m := range c.counts {
		if m < since.Unix() {
			delete(c.counts, m)
		}
	}
	if closed.After(c.until) {
		c.until = closed
	}
}

func (c *completionsCache) reset() {
	c.mu.Lock()
	c.counts, c.until = nil, time.Time{}
	c.mu.Unlock()
}

// countCache keeps the lists' match counts, by filter, for a refresh interval.
type countCache struct {
	mu sync.Mutex
	m  map[string]countEntry
}

type countEntry struct {
	c     matchCount
	taken time.Time // by the wall clock
}

// countCacheSize bounds the filters kept; past it the cache starts afresh.
const countCacheSize = 256

func (c *countCache) get(key string, maxAge time.Duration) (matchCount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || time.Since(e.taken) >= maxAge {
		return matchCount{}, false
	}
	return e.c, true
}

func (c *countCache) put(key string, mc matchCount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= countCacheSize {
		c.m = map[string]countEntry{}
	}
	c.m[key] = countEntry{mc, time.Now()}
}

func (c *countCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
