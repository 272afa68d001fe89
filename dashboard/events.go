package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// blockedFilter: the list offers the blocked checkbox (outbox.Filter.Blocked).
const blockedFilter = true

// listQuery is the events list's form, as it travels in the URL.
type listQuery struct {
	Status   string
	Type     string
	User     string
	Retrying bool // failed with a next attempt: the overview's "retrying"
	GivenUp  bool
	Stale    bool
	Stuck    bool
	Blocked  bool
	From     string // creation time, "2006-01-02T15:04" (UTC), inclusive
	To       string // exclusive
	Q        string // event IDs, separated by spaces or commas
	Oldest   bool   // oldest first; the default is newest first
	After    int64  // keyset cursor, oldest first: only events with a larger Seq
	Before   int64  // keyset cursor, newest first: only events with a smaller Seq
}

// timeLayout is what an <input type="datetime-local"> sends.
const timeLayout = "2006-01-02T15:04"

func parseListQuery(v url.Values) listQuery {
	after, _ := strconv.ParseInt(v.Get("after"), 10, 64)
	before, _ := strconv.ParseInt(v.Get("before"), 10, 64)
	return listQuery{
		Status: v.Get("status"), Type: strings.TrimSpace(v.Get("type")), User: strings.TrimSpace(v.Get("user")),
		Retrying: v.Get("retrying") != "", GivenUp: v.Get("given_up") != "", Stale: v.Get("stale") != "",
		Stuck: v.Get("stuck") != "", Blocked: v.Get("blocked") != "",
		From: strings.TrimSpace(v.Get("from")), To: strings.TrimSpace(v.Get("to")),
		Q: strings.TrimSpace(v.Get("q")), Oldest: v.Get("order") == "oldest",
		After: max(after, 0), Before: max(before, 0),
	}
}

// filterValues is q's filter as URL parameters: no order, no cursor.
func (q listQuery) filterValues() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("status", q.Status)
	set("type", q.Type)
	set("user", q.User)
	set("from", q.From)
	set("to", q.To)
	set("q", q.Q)
	for k, b := range map[string]bool{"retrying": q.Retrying, "given_up": q.GivenUp, "stale": q.Stale, "stuck": q.Stuck, "blocked": q.Blocked} {
		if b {
			v.Set(k, "1")
		}
	}
	return v
}

// values is q as URL parameters, with its order but without the cursor.
func (q listQuery) values() url.Values {
	v := q.filterValues()
	if q.Oldest {
		v.Set("order", "oldest")
	}
	return v
}

// Encode is the query string of q's filter: what an action on the matching set takes.
func (q listQuery) Encode() string { return q.filterValues().Encode() }

// Link is the query string of q's first page, for a link's href: already a URL query,
// so the template leaves it be.
func (q listQuery) Link() template.URL { return template.URL(q.values().Encode()) }

// OrderLink is Link in the other order.
func (q listQuery) OrderLink() template.URL {
	q.Oldest = !q.Oldest
	return q.Link()
}

// PageLink is the query string of the page of q from cursor at on, for a link's href.
func (q listQuery) PageLink(at int64) template.URL {
	v := q.values()
	if q.Oldest {
		v.Set("after", strconv.FormatInt(at, 10))
	} else {
		v.Set("before", strconv.FormatInt(at, 10))
	}
	return template.URL(v.Encode())
}

// FirstPage reports whether q has no cursor.
func (q listQuery) FirstPage() bool { return q.After == 0 && q.Before == 0 }

// Filtered reports whether q selects anything narrower than every event.
func (q listQuery) Filtered() bool { return q.Encode() != "" }

// selection is a listQuery made into what the store can answer, plus the conditions
// the dashboard applies to what the store returns (keep).
type selection struct {
	filter outbox.Filter // the store's part; the scans set AfterSeq and Limit
	lo     int64         // only events with a Seq above this one
	hi     int64         // when > 0: only events with a Seq below this one
	empty  bool          // nothing can match
	now    time.Time     // for stuck and stale

	retrying bool            // failed with a next attempt (the store's filter has failed)
	paused   map[string]bool // with stale: these types' events are not stale (as Stats.Stale counts)
	from, to time.Time       // the creation range, checked on each event

	scanBatch int // rows per query when the dashboard filters the rows (Handler.scan)
}

// filters reports whether the dashboard filters what the store returns (keep): the
// scans then read more rows per query.
func (s *selection) filters() bool {
	return s.retrying || len(s.paused) > 0 || !s.from.IsZero() || !s.to.IsZero()
}

// batch is how many rows a scan for need more events asks the store for at once.
func (s *selection) batch(need int) int {
	if s.filters() {
		return max(need, s.scanBatch)
	}
	return need
}

// keep reports whether e, which the store's filter selected, matches the rest.
func (s *selection) keep(e outbox.Event) bool {
	switch {
	case s.retrying && e.GivenUp():
		return false
	case s.paused[e.Type]:
		return false
	case !s.from.IsZero() && e.CreatedAt.Before(s.from):
		return false
	case !s.to.IsZero() && !e.CreatedAt.Before(s.to):
		return false
	}
	return true
}

// errQuery is a list query the dashboard cannot run; its message is for the user.
type errQuery struct{ msg string }

func (e *errQuery) Error() string { return e.msg }

// selection reads q. The cursor of q is left out: the scans take it.
func (h *Handler) selection(ctx context.Context, q listQuery) (selection, error) {
	sel := selection{now: h.cfg.Clock.Now(), scanBatch: h.scan.batch}
	f := &sel.filter
	f.Type, f.UserID, f.GivenUp = q.Type, q.User, q.GivenUp
	if q.Status != "" {
		st, err := outbox.ParseStatus(q.Status)
		if err != nil {
			return sel, &errQuery{fmt.Sprintf("status: unknown status %q", q.Status)}
		}
		f.Status = st
	}
	if q.GivenUp && f.Status != "" && f.Status != outbox.StatusFailed {
		return sel, &errQuery{"given up events are failed: clear the status or choose failed"}
	}
	if q.Retrying {
		switch {
		case q.GivenUp:
			return sel, &errQuery{"an event is either retrying or given up: choose one"}
		case f.Status != "" && f.Status != outbox.StatusFailed:
			return sel, &errQuery{"retrying events are failed: clear the status or choose failed"}
		}
		f.Status, sel.retrying = outbox.StatusFailed, true
	}
	if q.Stale {
		f.DueBefore = sel.now.Add(-h.cfg.StaleAfter)
		// The overview's stale count leaves the paused types out: so does the list.
		if p, ok := outbox.StoreAs[outbox.TypePauser](h.store); ok {
			paused, err := p.PausedTypes(ctx)
			if err != nil {
				return sel, err
			}
			for _, t := range paused {
				if sel.paused == nil {
					sel.paused = map[string]bool{}
				}
				sel.paused[t.Type] = true
			}
		}
	}
	if q.Stuck {
		if f.Status != "" && f.Status != outbox.StatusProcessing {
			return sel, &errQuery{"stuck events are processing: clear the status or choose processing"}
		}
		f.StuckAt = sel.now
	}
	f.Blocked = q.Blocked
	if q.Q != "" {
		for _, id := range strings.FieldsFunc(q.Q, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
			if _, err := uuid.Parse(id); err != nil {
				return sel, &errQuery{fmt.Sprintf("search: %q is not an event ID", id)}
			}
			f.IDs = append(f.IDs, id)
		}
	}
	for _, b := range []struct {
		name, value string
		t           *time.Time
	}{{"from", q.From, &sel.from}, {"to", q.To, &sel.to}} {
		if b.value == "" {
			continue
		}
		t, err := time.Parse(timeLayout, b.value)
		if err != nil {
			return sel, &errQuery{fmt.Sprintf("%s: %q is not a time like 2006-01-02T15:04", b.name, b.value)}
		}
		*b.t = t
	}
	if !sel.from.IsZero() && !sel.to.IsZero() && !sel.from.Before(sel.to) {
		return sel, &errQuery{"from must be before to"}
	}
	// The range narrows the Seq span to read (below); keep checks each event's own time,
	// so that an event written with a clock far from the others' is not listed outside it.
	if !sel.from.IsZero() {
		seq, err := h.seqBefore(ctx, sel.from, true)
		if err != nil {
			return sel, err
		}
		sel.lo = seq
	}
	if !sel.to.IsZero() {
		seq, err := h.seqBefore(ctx, sel.to, false)
		if err != nil {
			return sel, err
		}
		sel.hi, sel.empty = seq+1, seq == 0
	}
	return sel, nil
}

// seqBefore returns where the events created before t end: the Seq of the last one
// (0 when none). Events are numbered in the order they are written, so creation times
// follow Seq and a binary search over the primary key finds the boundary in a few dozen
// reads of a few rows, on any store and without an index on creation times.
//
// An event written with a clock far from the others' breaks that order. The search
// reads a few events at each step, and errs low (errLow, for the start of a range:
// only when all of them were created before t) or high (for its end: when any was),
// so that such an event widens the span read rather than hides its neighbours; it may
// itself fall outside the span, and then is not listed, but the list never shows an
// event outside the range, since the dashboard checks each event's own time (keep).
func (h *Handler) seqBefore(ctx context.Context, t time.Time, errLow bool) (int64, error) {
	const sample = 5
	// probe reads the first events after after: ok when there are any, and the Seq of
	// the last of them that counts as created before t (0 when none does).
	probe := func(after int64) (before int64, ok bool, err error) {
		events, err := h.store.List(ctx, outbox.Filter{AfterSeq: after, Limit: sample})
		if err != nil || len(events) == 0 {
			return 0, false, err
		}
		all := true
		for _, e := range events {
			if e.CreatedAt.Before(t) {
				before = e.Seq
			} else {
				all = false
			}
		}
		if errLow && !all {
			// Before t only up to the first event that is not.
			before = 0
			for _, e := range events {
				if !e.CreatedAt.Before(t) {
					break
				}
				before = e.Seq
			}
		}
		return before, true, nil
	}
	lo, ok, err := probe(0)
	if err != nil || !ok || lo == 0 {
		return 0, err
	}
	// Invariant: lo counts as created before t; the events from hi on do not.
	hi := int64(-1)
	for step := int64(1); hi < 0; step = min(step*2, math.MaxInt64/4) {
		c := lo + step
		b, _, err := probe(c - 1) // the first events from c on
		if err != nil {
			return 0, err
		}
		if b > 0 {
			lo = b
		} else {
			hi = c
		}
	}
	for hi-lo > 1 {
		c := lo + (hi-lo)/2
		b, _, err := probe(c - 1)
		if err != nil {
			return 0, err
		}
		if b > 0 {
			lo = max(lo, b)
		} else {
			hi = c
		}
	}
	return lo, nil
}

// lastSeq returns the largest Seq in the store (0 when it is empty), by galloping and
// then bisecting over the primary key from the last one found: a handful of one-row
// reads when few events were written since.
func (h *Handler) lastSeq(ctx context.Context) (int64, error) {
	first := func(after int64) (outbox.Event, bool, error) {
		events, err := h.store.List(ctx, outbox.Filter{AfterSeq: after, Limit: 1})
		if err != nil || len(events) == 0 {
			return outbox.Event{}, false, err
		}
		return events[0], true, nil
	}
	e, ok, err := first(max(h.top.Load()-1, 0))
	if err == nil && !ok && h.top.Load() > 0 { // the last ones were deleted: from the start
		e, ok, err = first(0)
	}
	if err != nil || !ok {
		return 0, err
	}
	// Invariant: an event has Seq lo; none has a Seq above hi.
	lo, hi := e.Seq, int64(-1)
	for step := int64(1); hi < 0; step = min(step*2, math.MaxInt64/4) {
		e, ok, err := first(lo + step - 1)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = e.Seq
		} else {
			hi = lo + step - 1
		}
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, ok, err := first(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = e.Seq
		} else {
			hi = mid
		}
	}
	h.top.Store(lo)
	return lo, nil
}

// scanLimits bound the reading of one page when the dashboard filters what the store
// returns (retrying, stale of paused types, a time range): a page then shows what was
// found so far, and its "next" link goes on from where the reading stopped.
type scanLimits struct {
	rounds int // store queries of an oldest-first page; twice as many newest first
	batch  int // rows per query
	small  int // the most matches a newest-first page reads in full (newestOfAll)
}

var defaultScanLimits = scanLimits{rounds: 20, batch: 200, small: 2000}

// find returns up to limit events of sel from cursor after on, oldest first, and the
// cursor of the next page (0 when there is none).
func (h *Handler) find(ctx context.Context, sel selection, after int64, limit int) ([]outbox.Event, int64, error) {
	if sel.empty {
		return nil, 0, nil
	}
	f := sel.filter
	f.AfterSeq = max(sel.lo, after)
	var out []outbox.Event
	for range h.scan.rounds {
		f.Limit = sel.batch(limit + 1 - len(out))
		events, err := h.store.List(ctx, f)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range events {
			if sel.hi > 0 && e.Seq >= sel.hi {
				return trim(out, limit)
			}
			if sel.keep(e) {
				out = append(out, e)
			}
		}
		if len(events) < f.Limit || len(out) > limit {
			return trim(out, limit)
		}
		f.AfterSeq = events[len(events)-1].Seq
	}
	// Stopped reading: the next page goes on from here.
	if len(out) > limit {
		return trim(out, limit)
	}
	return out, f.AfterSeq, nil
}

func trim(events []outbox.Event, limit int) ([]outbox.Event, int64, error) {
	if len(events) > limit {
		return events[:limit], events[limit-1].Seq, nil
	}
	return events, 0, nil
}

// findNewest returns up to limit events of sel with a Seq below before (0: from the
// newest on), newest first, and the cursor of the next page (0 when there is none).
//
// The store lists in Seq order only, so the dashboard reads windows of Seq downwards
// from the top, each twice as wide as the last (a sparse filter reaches the oldest
// events in a few dozen queries), and within a window that holds more events than a
// query returns, reads its upper half first.
func (h *Handler) findNewest(ctx context.Context, sel selection, before int64, limit int) ([]outbox.Event, int64, error) {
	if sel.empty {
		return nil, 0, nil
	}
	hi := sel.hi
	if before > 0 && (hi == 0 || before < hi) {
		hi = before
	}
	if hi == 0 {
		top, err := h.lastSeq(ctx)
		if err != nil || top == 0 {
			return nil, 0, err
		}
		hi = top + 1
	}
	s := &downScan{h: h, ctx: ctx, sel: &sel, batch: sel.batch(limit + 1), budget: 2 * h.scan.rounds, start: hi, floor: hi}
	var out []outbox.Event
	w := int64(2 * (limit + 1))
	for b := hi; b-sel.lo > 1 && len(out) <= limit && !s.stopped; {
		a := max(sel.lo, b-w)
		got, err := s.newestIn(a, b, limit+1-len(out))
		if err != nil {
			return nil, 0, err
		}
		out = append(out, got...)
		b = a + 1
		if len(got) == 0 {
			w = min(w*8, math.MaxInt64/16) // nothing here: the matches are sparse, or further down
		} else {
			w = min(w*2, math.MaxInt64/16)
		}
	}
	if len(out) > limit {
		return out[:limit], out[limit-1].Seq, nil
	}
	if s.stopped {
		return out, s.floor, nil
	}
	return out, 0, nil
}

// newestOfAll returns up to limit events of sel with a Seq below before (0: any),
// newest first, and the cursor of the next page, by reading every match oldest first:
// for a small set. It gives up (done false) past twice Handler.scan.small rows read.
func (h *Handler) newestOfAll(ctx context.Context, sel selection, before int64, limit int) (events []outbox.Event, next int64, done bool, err error) {
	if sel.empty {
		return nil, 0, true, nil
	}
	hi := sel.hi
	if before > 0 && (hi == 0 || before < hi) {
		hi = before
	}
	f := sel.filter
	f.AfterSeq = sel.lo
	ring := make([]outbox.Event, 0, limit+1) // the newest limit+1 so far, oldest first
	read := 0
	for {
		f.Limit = 1000
		rows, err := h.store.List(ctx, f)
		if err != nil {
			return nil, 0, false, err
		}
		end := len(rows) < f.Limit
		for _, e := range rows {
			if hi > 0 && e.Seq >= hi {
				end = true
				break
			}
			if !sel.keep(e) {
				continue
			}
			if len(ring) == limit+1 {
				ring = append(ring[:0], ring[1:]...)
			}
			ring = append(ring, e)
		}
		read += len(rows)
		if end {
			break
		}
		if read >= 2*h.scan.small {
			return nil, 0, false, nil
		}
		f.AfterSeq = rows[len(rows)-1].Seq
	}
	slices.Reverse(ring)
	if len(ring) > limit {
		return ring[:limit], ring[limit-1].Seq, true, nil
	}
	return ring, 0, true, nil
}

// downScan is one newest-first read.
type downScan struct {
	h       *Handler
	ctx     context.Context
	sel     *selection
	batch   int // events per query
	queries int
	budget  int   // queries, once something was read in full
	start   int64 // the Seq the read began below
	floor   int64 // every Seq from this one up to start has been read
	stopped bool  // the budget ran out: the next page goes on below floor
}

// newestIn returns up to need events of the selection with a < Seq < b, newest first.
func (s *downScan) newestIn(a, b int64, need int) ([]outbox.Event, error) {
	if need <= 0 || b-a <= 1 || s.stopped {
		return nil, nil
	}
	if s.queries >= s.budget && s.floor < s.start {
		s.stopped = true
		return nil, nil
	}
	s.queries++
	f := s.sel.filter
	f.AfterSeq, f.Limit = a, s.batch
	rows, err := s.h.store.List(s.ctx, f)
	if err != nil {
		return nil, err
	}
	n := len(rows)
	for n > 0 && rows[n-1].Seq >= b {
		n--
	}
	var out []outbox.Event
	if len(rows) == s.batch && n == len(rows) {
		// The window holds more than one query returned: read what lies above the last
		// row first, upper half first.
		last := rows[n-1].Seq
		mid := last + (b-last)/2
		up, err := s.newestIn(mid, b, need)
		if err != nil {
			return nil, err
		}
		out = up
		if len(out) < need {
			more, err := s.newestIn(last, mid+1, need-len(out))
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
		if s.stopped || len(out) >= need {
			return out, nil
		}
	}
	for i := n - 1; i >= 0 && len(out) < need; i-- {
		if s.sel.keep(rows[i]) {
			out = append(out, rows[i])
		}
	}
	if len(out) < need {
		s.floor = min(s.floor, a+1)
	}
	return out, nil
}

// countLimit bounds the events read to count a list's matches; past it, the list says
// "more than", or shows the overview's figure when the filter is one of the overview's.
const countLimit = 10_000

// matchCount is how many events a list's filter matches.
type matchCount struct {
	N    int
	More bool      // more than N: counting stopped
	AsOf time.Time // when not zero: N is the overview's figure, taken then
}

// count counts the events of sel, reading at most countLimit of the store's.
func (h *Handler) count(ctx context.Context, sel selection) (n int, more bool, err error) {
	if sel.empty {
		return 0, false, nil
	}
	f := sel.filter
	f.AfterSeq = sel.lo
	read := 0
	for {
		f.Limit = min(1000, countLimit+1-read)
		events, err := h.store.List(ctx, f)
		if err != nil {
			return 0, false, err
		}
		for _, e := range events {
			if sel.hi > 0 && e.Seq >= sel.hi {
				return n, false, nil
			}
			read++
			if read > countLimit {
				return n, true, nil
			}
			if sel.keep(e) {
				n++
			}
		}
		if len(events) < f.Limit {
			return n, false, nil
		}
		f.AfterSeq = events[len(events)-1].Seq
	}
}

// overviewFigure returns the overview's count of the events q matches, when q is one
// of the sets the overview counts: all events, a status, retrying, given up, stale,
// stuck, blocked, or a type with one of its statuses.
func overviewFigure(q listQuery, st outbox.Stats) (int, bool) {
	if q.User != "" || q.Q != "" || q.From != "" || q.To != "" {
		return 0, false
	}
	status := q.Status
	switch {
	case q.Retrying && (status == "" || status == "failed"):
		status = "retrying"
	case q.GivenUp && (status == "" || status == "failed"):
		status = "given up"
	case q.Retrying || q.GivenUp:
		return 0, false
	}
	if q.Type != "" {
		if q.Stale || q.Stuck || q.Blocked {
			return 0, false
		}
		tc := st.ByType[q.Type]
		switch status {
		case "":
			return tc.Pending + tc.Processing + tc.Completed + tc.Failed + tc.GivenUp, true
		case "pending":
			return tc.Pending, true
		case "processing":
			return tc.Processing, true
		case "completed":
			return tc.Completed, true
		case "failed":
			return tc.Failed + tc.GivenUp, true
		case "retrying":
			return tc.Failed, true
		case "given up":
			return tc.GivenUp, true
		}
		return 0, false
	}
	flags := 0
	for _, b := range []bool{q.Stale, q.Stuck, q.Blocked} {
		if b {
			flags++
		}
	}
	switch {
	case flags > 1:
		return 0, false
	case q.Stale && status == "":
		return st.Stale, true
	case q.Stuck && (status == "" || status == "processing"):
		return st.Stuck, true
	case q.Blocked && status == "":
		return st.Blocked, true
	case flags > 0:
		return 0, false
	}
	switch status {
	case "":
		return st.Total, true
	case "pending":
		return st.Pending, true
	case "processing":
		return st.Processing, true
	case "completed":
		return st.Completed, true
	case "failed":
		return st.Failed + st.GivenUp, true
	case "retrying":
		return st.Failed, true
	case "given up":
		return st.GivenUp, true
	}
	return 0, false
}

// matches counts the events q matches: counted now when there are at most countLimit,
// else the overview's figure when q is one of its sets, else "more than".
//
// A count is kept for RefreshInterval (an action drops it), so that paging through a
// list does not count it again on every page.
func (h *Handler) matches(ctx context.Context, q listQuery, sel selection) (matchCount, error) {
	key := q.Encode()
	if c, ok := h.counts.get(key, h.cfg.RefreshInterval); ok {
		return c, nil
	}
	c, err := h.countMatches(ctx, q, sel)
	if err == nil {
		h.counts.put(key, c)
	}
	return c, err
}

func (h *Handler) countMatches(ctx context.Context, q listQuery, sel selection) (matchCount, error) {
	// A set the overview counts, and that the overview finds too large to count here,
	// takes the overview's figure (as of when it was taken).
	if _, ok := overviewFigure(q, outbox.Stats{}); ok {
		o, err := h.cachedOverview(ctx)
		if err == nil {
			if n, _ := overviewFigure(q, o.Stats); n > countLimit {
				return matchCount{N: n, AsOf: o.At}, nil
			}
		}
	}
	n, more, err := h.count(ctx, sel)
	if err != nil {
		return matchCount{}, err
	}
	return matchCount{N: n, More: more}, nil
}

type eventsPage struct {
	Query    listQuery
	Events   []outbox.Event
	Next     int64 // the cursor of the next page; 0 on the last
	Count    matchCount
	Statuses []outbox.Status
	Blocked  bool // the blocked filter is available
	Now      time.Time
}

func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := parseListQuery(r.URL.Query())
	p := page{Title: "Events", Nav: "events", Notice: notice(r.URL.Query())}
	data := eventsPage{
		Query: q, Now: h.cfg.Clock.Now(), Blocked: blockedFilter,
		Statuses: []outbox.Status{outbox.StatusPending, outbox.StatusProcessing, outbox.StatusCompleted, outbox.StatusFailed},
	}
	p.Data = &data
	sel, err := h.selection(ctx, q)
	var eq *errQuery
	if errors.As(err, &eq) {
		p.Error = eq.msg
		h.render(w, r, http.StatusBadRequest, "events", p)
		return
	}
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if data.Count, err = h.matches(ctx, q, sel); err != nil {
		h.storeError(w, r, err)
		return
	}
	switch {
	case q.Oldest:
		data.Events, data.Next, err = h.find(ctx, sel, q.After, h.cfg.PageSize)
	case data.Count.AsOf.IsZero() && !data.Count.More && data.Count.N <= h.scan.small:
		// A few matches: reading them all costs a query or two, where reading windows
		// of Seq downwards would cost one per window (the stores' queries of unfinished
		// events read every match above the window's start).
		var done bool
		data.Events, data.Next, done, err = h.newestOfAll(ctx, sel, q.Before, h.cfg.PageSize)
		if err == nil && !done {
			data.Events, data.Next, err = h.findNewest(ctx, sel, q.Before, h.cfg.PageSize)
		}
	default:
		data.Events, data.Next, err = h.findNewest(ctx, sel, q.Before, h.cfg.PageSize)
	}
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "events", p)
}

// eventPage is an event in full, for its detail page.
type eventPage struct {
	Event    outbox.Event
	Payload  string // pretty-printed when it is JSON, as stored otherwise
	Metadata []kv
	Timeline []step
	Stuck    bool
	InFlight bool // processing under a live lease: being delivered
	Stale    bool
	GivenUp  bool
	// Head is the earliest unfinished event of the event's ordering key, when it is
	// another one: the event waits behind it (is blocked, when it was given up).
	Head      *outbox.Event
	HeadKnown bool // the store can tell (outbox.KeyInspector)
	CanRetry  bool
}

type kv struct{ Key, Value string }

// step is one line of an event's history.
type step struct {
	At    time.Time
	What  string
	Error string
	Class string // for the stylesheet: ok, fail, info
}

func (h *Handler) serveEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("%q is not an event ID", id))
		return
	}
	e, err := h.store.Get(ctx, id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	now := h.cfg.Clock.Now()
	d := eventPage{
		Event: e, Stuck: isStuck(e, now), InFlight: inFlight(e, now), Stale: e.IsStale(now, h.cfg.StaleAfter), GivenUp: e.GivenUp(),
		CanRetry: e.Status != outbox.StatusCompleted && !inFlight(e, now),
	}
	d.Payload = string(e.Payload)
	var pretty bytes.Buffer
	if len(e.Payload) > 0 && json.Indent(&pretty, e.Payload, "", "  ") == nil {
		d.Payload = pretty.String()
	}
	for k, v := range e.Metadata {
		d.Metadata = append(d.Metadata, kv{k, v})
	}
	slices.SortFunc(d.Metadata, func(a, b kv) int { return strings.Compare(a.Key, b.Key) })
	d.Timeline = history(e, now)
	if ki, ok := outbox.StoreAs[outbox.KeyInspector](h.store); ok && e.OrderingKey != "" {
		d.HeadKnown = true
		head, err := ki.KeyHead(ctx, e.OrderingKey)
		switch {
		case errors.Is(err, outbox.ErrNotFound):
		case err != nil:
			h.storeError(w, r, err)
			return
		case head.ID != e.ID && head.Seq < e.Seq:
			d.Head = &head
		}
	}
	h.render(w, r, http.StatusOK, "event", page{Title: "Event " + e.ID, Nav: "events", Notice: notice(r.URL.Query()), Data: d})
}

// history lists what happened to e, oldest first: its creation, each failed attempt
// with its error, the attempt in flight, its completion, and what comes next.
func history(e outbox.Event, now time.Time) []step {
	steps := []step{{At: e.CreatedAt, What: "created", Class: "info"}}
	for _, a := range e.Errors {
		steps = append(steps, step{At: a.At, What: fmt.Sprintf("attempt %d failed", a.Attempt), Error: a.Error, Class: "fail"})
	}
	switch {
	case e.Status == outbox.StatusProcessing:
		what := fmt.Sprintf("attempt %d started by %s, lease until %s", e.Attempts, e.LeaseOwner, e.LeaseExpiresAt.UTC().Format(time.RFC3339))
		if isStuck(e, now) {
			what += " (expired: stuck)"
		}
		steps = append(steps, step{At: e.LastAttemptAt, What: what, Class: "info"})
	case e.Status == outbox.StatusCompleted:
		steps = append(steps, step{At: e.CompletedAt, What: fmt.Sprintf("completed at attempt %d", e.Attempts), Class: "ok"})
	case e.GivenUp():
		steps = append(steps, step{At: e.UpdatedAt, What: "given up: waits for an operator", Class: "fail"})
	case e.Status == outbox.StatusFailed:
		steps = append(steps, step{At: e.NextAttemptAt, What: fmt.Sprintf("attempt %d due", e.Attempts+1), Class: "info"})
	case e.Status == outbox.StatusPending && e.Attempts == 0 && len(e.Errors) > 0:
		steps = append(steps, step{At: e.UpdatedAt, What: "reset for retry", Class: "info"})
	}
	slices.SortStableFunc(steps, func(a, b step) int { return a.At.Compare(b.At) })
	return steps
}
