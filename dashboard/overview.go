package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/fitiq/outbox"
)

// overview is what the overview page shows, and what /api/overview returns.
type overview struct {
	At     time.Time          `json:"at"`
	Stats  outbox.Stats       `json:"stats"`
	Health outbox.Health      `json:"health"`
	Rules  outbox.HealthRules `json:"rules"`
	// Stuck counts processing events whose lease has expired: their relay is gone and
	// no claim has taken them over yet.
	Stuck      int           `json:"stuck"`
	StaleAfter time.Duration `json:"stale_after"`
	Types      []typeRow     `json:"-"`
	// Window sums the chart's buckets; Chart is nil when the store has no Timeline.
	Window *windowTotals `json:"window,omitempty"`
	Chart  *chart        `json:"-"`
	// Timeline is the chart's data, one bucket per minute (zeros included). With
	// Config.LogTimeline, a bucket's Completed includes what the log delivered in it,
	// and so do Window's Completed and FailureRate.
	Timeline []outbox.TimelineBucket `json:"timeline,omitempty"`
	// Log is what waits on the event log (Config.LogWaiting); nil without one.
	Log *logWaiting `json:"log,omitempty"`
	// LogDelivered is how many events the log's relays delivered in the health window
	// (Config.LogDelivered), included in Stats.Recent.Completed; nil without a count.
	LogDelivered *int64 `json:"log_delivered,omitempty"`
}

// logWaiting is what waits on the event log of the log layout.
type logWaiting struct {
	Events int64 `json:"events"`
	// OldestAge is how long the oldest of them has existed; zero when none waits.
	OldestAge time.Duration `json:"oldest_age"`
	// Behind is true when OldestAge is past the rules' MaxOldestDue.
	Behind bool `json:"behind"`
}

// ruleLogBehind is the overview's alert on the log: its oldest waiting event is older
// than HealthRules.MaxOldestDue (as the shipped Prometheus rule OutboxLogBehind).
const ruleLogBehind = "log_behind"

type typeRow struct {
	Type   string
	Paused bool
	outbox.TypeCounts
}

type windowTotals struct {
	Minutes     int     `json:"minutes"`
	Completed   int     `json:"completed"`
	Failed      int     `json:"failed"`
	GivenUp     int     `json:"given_up"`
	FailureRate float64 `json:"failure_rate"` // failed of (completed + failed) in the window
}

func (h *Handler) overview(ctx context.Context) (overview, error) {
	now := h.cfg.Clock.Now()
	// The timeline is read beside the counts: the two are the overview's cost, and
	// neither needs the other.
	var (
		buckets     []outbox.TimelineBucket
		timelineErr error
		wg          sync.WaitGroup
	)
	tl, hasTimeline := outbox.StoreAs[outbox.Timeline](h.store)
	// Whole minutes, the current one included.
	until := now.Truncate(time.Minute).Add(time.Minute)
	since := until.Add(-h.cfg.ChartWindow)
	var completedSince time.Time
	var (
		logBuckets     []outbox.TimelineBucket
		logTimelineErr error
	)
	if hasTimeline {
		completedSince = h.completions.since(since, until)
		wg.Go(func() {
			buckets, timelineErr = tl.Timeline(ctx, outbox.TimelineQuery{Since: since, Until: until, CompletedSince: completedSince})
		})
		if h.cfg.LogTimeline != nil {
			// The same minutes as the store's completions: the cache keeps the sum of
			// both for the minutes before completedSince.
			wg.Go(func() {
				logBuckets, logTimelineErr = h.cfg.LogTimeline(ctx, completedSince, until)
				if logTimelineErr != nil {
					logTimelineErr = fmt.Errorf("outbox/dashboard: what the log delivered per minute: %w", logTimelineErr)
				}
			})
		}
	}
	var (
		onLog  *logWaiting
		logErr error
	)
	if h.cfg.LogWaiting != nil {
		wg.Go(func() { onLog, logErr = h.waitingOnLog(ctx, now) })
	}
	// The health rules' window too, so that the failure-rate and given-up rules see the
	// recent outcomes (Stats.Recent).
	query := h.cfg.Health.StatsQuery("", now, h.cfg.StaleAfter)
	var (
		logDelivered *int64
		deliveredErr error
	)
	if h.cfg.LogDelivered != nil {
		wg.Go(func() {
			n, err := h.cfg.LogDelivered(ctx, now.Add(-query.Window))
			if err != nil {
				deliveredErr = fmt.Errorf("outbox/dashboard: what the log delivered: %w", err)
				return
			}
			logDelivered = &n
		})
	}
	st, err := h.store.Stats(ctx, query)
	wg.Wait()
	if err != nil {
		return overview{}, err
	}
	if timelineErr != nil {
		return overview{}, timelineErr
	}
	if logErr != nil {
		return overview{}, logErr
	}
	if deliveredErr != nil {
		return overview{}, deliveredErr
	}
	if logTimelineErr != nil {
		return overview{}, logTimelineErr
	}
	if logDelivered != nil {
		// The log's successes, which leave no row: the window's outcomes are theirs and
		// the table's (where the log's failures go).
		st.Recent.Completed += int(*logDelivered)
	}
	o := overview{At: now, Stats: st, Rules: h.cfg.rules(), StaleAfter: h.cfg.StaleAfter, Log: onLog, LogDelivered: logDelivered}
	o.Health = outbox.CheckHealth(st, h.cfg.Health)
	o.Health.Stats = outbox.Stats{} // already in o.Stats
	if onLog != nil && onLog.Behind {
		o.Health.Healthy = false
		o.Health.Alerts = append(o.Health.Alerts, outbox.Alert{
			Rule: ruleLogBehind, Value: onLog.OldestAge.Seconds(), Threshold: o.Rules.MaxOldestDue.Seconds(),
			Message: fmt.Sprintf("the oldest of %d events on the log has waited %s, above %s: is a log relay running, and is its destination held?",
				onLog.Events, roundDuration(onLog.OldestAge), roundDuration(o.Rules.MaxOldestDue)),
		})
	}

	o.Stuck = st.Stuck

	for typ, tc := range st.ByType {
		o.Types = append(o.Types, typeRow{Type: typ, Paused: slices.Contains(st.Paused, typ), TypeCounts: tc})
	}
	slices.SortFunc(o.Types, func(a, b typeRow) int { return cmp.Compare(a.Type, b.Type) })

	if hasTimeline {
		o.Timeline = fillMinutes(buckets, since, until)
		addCompleted(o.Timeline, logBuckets, completedSince)
		h.completions.merge(o.Timeline, since, completedSince, until)
		o.Window = &windowTotals{Minutes: len(o.Timeline)}
		for _, b := range o.Timeline {
			o.Window.Completed += b.Completed
			o.Window.Failed += b.Failed
			o.Window.GivenUp += b.GivenUp
		}
		// The chart's hour, from the timeline; the failure-rate alert reads the health
		// window (Stats.Recent) instead.
		if settled := o.Window.Completed + o.Window.Failed; settled > 0 {
			o.Window.FailureRate = float64(o.Window.Failed) / float64(settled)
		}
		o.Chart = newChart(o.Timeline, now)
	}
	return o, nil
}

// waitingOnLog asks Config.LogWaiting what waits on the log, and judges its age by
// the rules.
func (h *Handler) waitingOnLog(ctx context.Context, now time.Time) (*logWaiting, error) {
	n, oldest, err := h.cfg.LogWaiting(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/dashboard: what waits on the log: %w", err)
	}
	w := &logWaiting{Events: n}
	if !oldest.IsZero() {
		w.OldestAge = max(now.Sub(oldest), 0)
	}
	maxAge := h.cfg.rules().MaxOldestDue
	w.Behind = maxAge >= 0 && n > 0 && w.OldestAge > maxAge
	return w, nil
}

func isStuck(e outbox.Event, now time.Time) bool {
	return e.Status == outbox.StatusProcessing && !e.LeaseExpiresAt.After(now)
}

// inFlight reports whether a processor is delivering e: it holds e under a lease that
// has not expired.
func inFlight(e outbox.Event, now time.Time) bool {
	return e.Status == outbox.StatusProcessing && e.LeaseExpiresAt.After(now)
}

// fillMinutes returns one bucket per minute of [since, until), zeros where the store
// had none.
func fillMinutes(buckets []outbox.TimelineBucket, since, until time.Time) []outbox.TimelineBucket {
	byMinute := make(map[int64]outbox.TimelineBucket, len(buckets))
	for _, b := range buckets {
		byMinute[b.Minute.Unix()] = b
	}
	var out []outbox.TimelineBucket
	for m := since.UTC(); m.Before(until); m = m.Add(time.Minute) {
		b, ok := byMinute[m.Unix()]
		if !ok {
			b = outbox.TimelineBucket{Minute: m}
		}
		out = append(out, b)
	}
	return out
}

// addCompleted adds the completions of more (the log's deliveries) to the minutes of
// dense from from on. The minutes before from are left alone: merge fills them from
// the completions cache, which holds the sum of both, so adding there would count the
// log's twice.
func addCompleted(dense, more []outbox.TimelineBucket, from time.Time) {
	if len(more) == 0 || len(dense) == 0 {
		return
	}
	first := dense[0].Minute
	for _, b := range more {
		m := b.Minute.Truncate(time.Minute)
		if m.Before(from) || m.Before(first) {
			continue
		}
		if i := int(m.Sub(first) / time.Minute); i < len(dense) {
			dense[i].Completed += b.Completed
		}
	}
}

// chart is the throughput chart as SVG geometry: a bar per minute, completions below
// and failures stacked on top.
type chart struct {
	Width, Height float64
	Base, LabelY  float64 // the baseline, and where the time labels sit
	Bars          []bar
	Max           int
	Ticks         []tick
}

type bar struct {
	X, W              float64
	CompletedY, CompH float64
	FailedY, FailedH  float64
	Label             string
	Completed, Failed int
}

type tick struct {
	X     float64
	Label string
}

const (
	chartWidth  = 720
	chartHeight = 160
	chartAxis   = 16 // room for the time labels under the bars
)

func newChart(buckets []outbox.TimelineBucket, now time.Time) *chart {
	c := &chart{Width: chartWidth, Height: chartHeight + chartAxis, Base: chartHeight, LabelY: chartHeight + chartAxis - 3}
	for _, b := range buckets {
		c.Max = max(c.Max, b.Completed+b.Failed)
	}
	if len(buckets) == 0 {
		return c
	}
	scale := 0.0
	if c.Max > 0 {
		scale = chartHeight / float64(c.Max)
	}
	step := float64(chartWidth) / float64(len(buckets))
	for i, b := range buckets {
		x := float64(i) * step
		ch, fh := float64(b.Completed)*scale, float64(b.Failed)*scale
		c.Bars = append(c.Bars, bar{
			X: x + 1, W: max(step-2, 1),
			CompletedY: chartHeight - ch, CompH: ch,
			FailedY: chartHeight - ch - fh, FailedH: fh,
			Completed: b.Completed, Failed: b.Failed,
			Label: fmt.Sprintf("%s UTC: %d completed, %d failed", b.Minute.Format("15:04"), b.Completed, b.Failed),
		})
		// A label every ten minutes, centred on its bar, where it fits inside the chart.
		if mid := x + step/2; b.Minute.Minute()%10 == 0 && mid > 16 && mid < chartWidth-16 {
			c.Ticks = append(c.Ticks, tick{X: mid, Label: b.Minute.Format("15:04")})
		}
	}
	return c
}

func (h *Handler) serveOverview(w http.ResponseWriter, r *http.Request) {
	o, err := h.cachedOverview(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Data: o})
}

// serveOverviewLive renders the overview's live part alone; the page's script swaps it
// in, so that the figures refresh without a reload and are rendered in one place.
func (h *Handler) serveOverviewLive(w http.ResponseWriter, r *http.Request) {
	o, err := h.cachedOverview(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	p := page{Data: o}
	p.CSRF, p.ReadOnly, p.Now = h.csrf, h.cfg.ReadOnly, h.cfg.Clock.Now()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.pages["overview"].ExecuteTemplate(w, "live", p); err != nil {
		h.log.Error("render live overview", "err", err)
	}
}

func (h *Handler) serveOverviewJSON(w http.ResponseWriter, r *http.Request) {
	o, err := h.cachedOverview(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(o)
}
