package dashboard

import (
	"context"
	"sync"
	"time"
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
}
