package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
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
	Status  string
	Type    string
	User    string
	GivenUp bool
	Stale   bool
	Stuck   bool
	Blocked bool
	From    string // creation time, "2006-01-02T15:04" (UTC), inclusive
	To      string // exclusive
	Q       string // event IDs, separated by spaces or commas
	After   int64  // keyset cursor: only events with a larger Seq
}

// timeLayout is what an <input type="datetime-local"> sends.
const timeLayout = "2006-01-02T15:04"

func parseListQuery(v url.Values) listQuery {
	after, _ := strconv.ParseInt(v.Get("after"), 10, 64)
	return listQuery{
		Status: v.Get("status"), Type: strings.TrimSpace(v.Get("type")), User: strings.TrimSpace(v.Get("user")),
		GivenUp: v.Get("given_up") != "", Stale: v.Get("stale") != "", Stuck: v.Get("stuck") != "", Blocked: v.Get("blocked") != "",
		From: strings.TrimSpace(v.Get("from")), To: strings.TrimSpace(v.Get("to")),
		Q: strings.TrimSpace(v.Get("q")), After: max(after, 0),
	}
}

// values is q as URL parameters, without the cursor.
func (q listQuery) values() url.Values {
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
	for k, b := range map[string]bool{"given_up": q.GivenUp, "stale": q.Stale, "stuck": q.Stuck, "blocked": q.Blocked} {
		if b {
			v.Set(k, "1")
		}
	}
	return v
}

// Encode is the query string of q without the cursor.
func (q listQuery) Encode() string { return q.values().Encode() }

// Link is Encode for a link's href: already a URL query, so the template leaves it be.
func (q listQuery) Link() template.URL { return template.URL(q.Encode()) }

// PageLink is the query string of q from cursor after on, for a link's href.
func (q listQuery) PageLink(after int64) template.URL {
	v := q.values()
	v.Set("after", strconv.FormatInt(after, 10))
	return template.URL(v.Encode())
}

// Filtered reports whether q selects anything narrower than every event.
func (q listQuery) Filtered() bool { return q.Encode() != "" }

// selection is a listQuery made into what the store can answer, plus the conditions
// the dashboard applies to what the store returns.
type selection struct {
	filter  outbox.Filter
	toSeq   int64     // when > 0: only events with a Seq up to this one
	toEmpty bool      // the time range ends before the first event: nothing matches
	now     time.Time // for stuck and stale
}

// errQuery is a list query the dashboard cannot run; its message is for the user.
type errQuery struct{ msg string }

func (e *errQuery) Error() string { return e.msg }

func (h *Handler) selection(ctx context.Context, q listQuery) (selection, error) {
	sel := selection{now: h.cfg.Clock.Now()}
	f := &sel.filter
	f.Type, f.UserID, f.GivenUp, f.AfterSeq = q.Type, q.User, q.GivenUp, q.After
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
	if q.Stale {
		f.DueBefore = sel.now.Add(-h.cfg.StaleAfter)
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
	var from, to time.Time
	for _, b := range []struct {
		name, value string
		t           *time.Time
	}{{"from", q.From, &from}, {"to", q.To, &to}} {
		if b.value == "" {
			continue
		}
		t, err := time.Parse(timeLayout, b.value)
		if err != nil {
			return sel, &errQuery{fmt.Sprintf("%s: %q is not a time like 2006-01-02T15:04", b.name, b.value)}
		}
		*b.t = t
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return sel, &errQuery{"from must be before to"}
	}
	if !from.IsZero() {
		seq, err := h.seqBefore(ctx, from)
		if err != nil {
			return sel, err
		}
		f.AfterSeq = max(f.AfterSeq, seq)
	}
	if !to.IsZero() {
		seq, err := h.seqBefore(ctx, to)
		if err != nil {
			return sel, err
		}
		sel.toSeq, sel.toEmpty = seq, seq == 0
	}
	return sel, nil
}

// seqBefore returns the Seq of the last event created before t (0 when none): the
// events created from t on are those after it. Events are numbered in the order they
// are written, so creation times follow Seq and a binary search over the primary key
// finds the boundary in a few dozen one-row reads, on any store and without an index
// on creation times. (An event enqueued with a "now" far from the others' would be
// placed by its Seq, not its time.)
func (h *Handler) seqBefore(ctx context.Context, t time.Time) (int64, error) {
	first := func(after int64) (outbox.Event, bool, error) {
		events, err := h.store.List(ctx, outbox.Filter{AfterSeq: after, Limit: 1})
		if err != nil || len(events) == 0 {
			return outbox.Event{}, false, err
		}
		return events[0], true, nil
	}
	e, ok, err := first(0)
	if err != nil || !ok || !e.CreatedAt.Before(t) {
		return 0, err
	}
	// Invariant: event lo is created before t; every event from hi on is not.
	lo, hi := e.Seq, int64(-1)
	for step := int64(1); hi < 0; step *= 2 {
		c := lo + step
		e, ok, err := first(c - 1) // the first event from c on
		if err != nil {
			return 0, err
		}
		if ok && e.CreatedAt.Before(t) {
			lo = e.Seq
		} else {
			hi = c
		}
	}
	for hi-lo > 1 {
		c := lo + (hi-lo)/2
		e, ok, err := first(c - 1)
		if err != nil {
			return 0, err
		}
		if ok && e.CreatedAt.Before(t) {
			lo = e.Seq
		} else {
			hi = c
		}
	}
	return lo, nil
}

// maxScanRounds bounds the store queries one page may take when the dashboard filters
// what the store returns (stuck, the end of a time range): a page then shows what was
// found so far, and its "next" link goes on from where the reading stopped.
const maxScanRounds = 20

// find returns up to limit events of sel, oldest first, and the cursor of the next page
// (0 when there is none).
func (h *Handler) find(ctx context.Context, sel selection, limit int) ([]outbox.Event, int64, error) {
	if sel.toEmpty {
		return nil, 0, nil
	}
	f := sel.filter
	var out []outbox.Event
	for range maxScanRounds {
		f.Limit = limit + 1 - len(out)
		events, err := h.store.List(ctx, f)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range events {
			if sel.toSeq > 0 && e.Seq > sel.toSeq {
				return trim(out, limit)
			}
			out = append(out, e)
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

type eventsPage struct {
	Query     listQuery
	Events    []outbox.Event
	Next      int64 // the cursor of the next page; 0 on the last
	Statuses  []outbox.Status
	Blocked   bool // the blocked filter is available
	Now       time.Time
	FirstPage bool
}

func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	q := parseListQuery(r.URL.Query())
	p := page{Title: "Events", Nav: "events", Notice: notice(r.URL.Query())}
	data := eventsPage{
		Query: q, Now: h.cfg.Clock.Now(), FirstPage: q.After == 0, Blocked: blockedFilter,
		Statuses: []outbox.Status{outbox.StatusPending, outbox.StatusProcessing, outbox.StatusCompleted, outbox.StatusFailed},
	}
	p.Data = &data
	sel, err := h.selection(r.Context(), q)
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
	if data.Events, data.Next, err = h.find(r.Context(), sel, h.cfg.PageSize); err != nil {
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
		Event: e, Stuck: isStuck(e, now), Stale: e.IsStale(now, h.cfg.StaleAfter), GivenUp: e.GivenUp(),
		CanRetry: e.Status != outbox.StatusCompleted && !(e.Status == outbox.StatusProcessing && e.LeaseExpiresAt.After(now)),
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
