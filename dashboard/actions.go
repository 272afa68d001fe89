package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// The actions an operator may take.
var actions = map[string]struct{ verb, done string }{
	"retry":   {"Retry", "retried"},
	"discard": {"Discard", "discarded"},
}

// confirmShown bounds the events a confirmation lists one by one; the form carries
// every ID all the same.
const confirmShown = 200

type confirmPage struct {
	Action, Verb string
	IDs          []string       // every event the confirmation acts on
	Events       []outbox.Event // the first confirmShown of them, as they stand
	More         int            // how many more there are
	Gone         int            // IDs asked for that no longer exist
	Held         []outbox.Event // events under a live lease (a discard leaves them unless forced)
	ByStatus     []statusCount
	Capped       bool // the filtered set has more events than MaxBatch
	MaxBatch     int
	Back         string
	Query        string // the filter the set came from, to show
	Now          time.Time
}

type statusCount struct {
	Status string
	N      int
}

// serveAction takes an action on events named by ID (ids, repeated) or on the events
// of a list query. The first POST shows what would be done and asks to confirm; the
// confirmation posts the exact IDs shown, with confirm=yes, and only then does the
// store change, one event at a time, each logged in full.
//
// A discard leaves an event that a processor holds under a live lease, as
// `outbox discard` does, unless the form says force=yes (a box the confirmation offers
// when it lists such events).
func (h *Handler) serveAction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("action")
	act, ok := actions[name]
	if !ok {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("no such action %q", name))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "the form could not be read")
		return
	}
	if status, msg := h.checkAction(r); status != 0 {
		h.log.Warn("action refused", "action", name, "who", who(r.Context()), "remote", r.RemoteAddr, "reason", msg)
		h.fail(w, r, status, msg)
		return
	}
	ctx := r.Context()
	back := h.safeBack(r.PostFormValue("back"))
	ids := r.PostForm["ids"]
	for _, id := range ids {
		if _, err := uuid.Parse(id); err != nil {
			h.fail(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not an event ID", id))
			return
		}
	}
	query := r.PostFormValue("query")
	capped := false
	if len(ids) == 0 {
		// The events of a list query: read them now, and confirm exactly those.
		v, err := url.ParseQuery(query)
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, "the filter could not be read")
			return
		}
		q := parseListQuery(v)
		if !q.Filtered() {
			h.fail(w, r, http.StatusBadRequest, "choose a filter first: an action never applies to every event at once")
			return
		}
		sel, err := h.selection(ctx, q)
		var eq *errQuery
		if errors.As(err, &eq) {
			h.fail(w, r, http.StatusBadRequest, eq.msg)
			return
		}
		if err != nil {
			h.storeError(w, r, err)
			return
		}
		events, next, err := h.find(ctx, sel, 0, h.cfg.MaxBatch)
		if err != nil {
			h.storeError(w, r, err)
			return
		}
		for _, e := range events {
			ids = append(ids, e.ID)
		}
		capped = next != 0
	}
	ids = dedupe(ids)
	if len(ids) == 0 {
		h.fail(w, r, http.StatusBadRequest, "no event matches: nothing to "+name)
		return
	}
	// The events as they stand now: what the confirmation shows, what the log keeps,
	// and whether a processor holds them.
	events, err := h.events(ctx, ids)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	now := h.cfg.Clock.Now()
	var held []outbox.Event
	for _, e := range events {
		if inFlight(e, now) {
			held = append(held, e)
		}
	}
	force := name == "discard" && r.PostFormValue("force") == "yes"

	if r.PostFormValue("confirm") != "yes" {
		c := confirmPage{Action: name, Verb: act.verb, Capped: capped, MaxBatch: h.cfg.MaxBatch, Back: back, Query: query, Held: held, Now: now}
		seen := map[string]int{}
		for _, e := range events {
			c.IDs = append(c.IDs, e.ID)
			st := statusOf(e, now).Text
			if _, ok := seen[st]; !ok {
				seen[st] = len(c.ByStatus)
				c.ByStatus = append(c.ByStatus, statusCount{Status: st})
			}
			c.ByStatus[seen[st]].N++
		}
		c.Gone = len(ids) - len(events)
		if len(c.IDs) == 0 {
			h.fail(w, r, http.StatusNotFound, "none of these events exists any longer: nothing to "+name)
			return
		}
		c.Events = events[:min(len(events), confirmShown)]
		c.More = len(events) - len(c.Events)
		h.render(w, r, http.StatusOK, "confirm", page{Title: act.verb + " events", Nav: "events", Data: c})
		return
	}

	log := h.log.With("action", name, "who", who(ctx), "remote", r.RemoteAddr)
	if name == "discard" && len(held) > 0 && !force && len(held) == len(events) {
		for _, e := range held {
			logEvent(log, slog.LevelWarn, "event not discarded: being delivered", e, "lease_owner", e.LeaseOwner, "lease_expires_at", e.LeaseExpiresAt)
		}
		msg := fmt.Sprintf("event %s is being delivered by %s (its lease runs until %s UTC): it was not discarded. "+
			"Wait for the delivery to end, or tick the box that forces the discard.", held[0].ID, held[0].LeaseOwner, held[0].LeaseExpiresAt.UTC().Format("15:04:05"))
		if len(held) > 1 {
			msg = fmt.Sprintf("all %d events are being delivered under a live lease: none was discarded. "+
				"Wait for the deliveries to end, or tick the box that forces the discard.", len(held))
		}
		h.fail(w, r, http.StatusConflict, msg)
		return
	}
	n, left, err := h.act(ctx, log, name, events, force, now)
	h.invalidate()
	if err != nil {
		log.Error("action failed", "requested", len(ids), act.done, n, "filter", query, "err", err)
		h.storeError(w, r, err)
		return
	}
	log.Info("action", "requested", len(ids), act.done, n, "left", left, "not_found", len(ids)-len(events),
		"forced", force && len(held) > 0, "filter", query)
	if name == "discard" && n > 0 && strings.HasPrefix(back, h.cfg.Prefix+"/events/") {
		back = h.cfg.Prefix + "/events" // the event is gone
	}
	sep := "?"
	if strings.Contains(back, "?") {
		sep = "&"
	}
	to := back + sep + "done=" + name + "&n=" + strconv.Itoa(n) + "&of=" + strconv.Itoa(len(ids))
	if name == "discard" && !force && len(held) > 0 {
		to += "&held=" + strconv.Itoa(len(held))
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// act takes the action on each event, one at a time so that the log names exactly what
// changed, and returns how many changed and how many were left as they were.
func (h *Handler) act(ctx context.Context, log *slog.Logger, name string, events []outbox.Event, force bool, now time.Time) (n, left int, err error) {
	for _, e := range events {
		if err := ctx.Err(); err != nil {
			return n, left, fmt.Errorf("interrupted after %d: %w", n, err)
		}
		switch name {
		case "retry":
			d, err := h.store.Retry(ctx, now, filterIDs([]string{e.ID}))
			if err != nil {
				return n, left, fmt.Errorf("after retrying %d: %w", n, err)
			}
			if d == 1 {
				logEvent(log, slog.LevelInfo, "event retried", e)
				n++
				continue
			}
			reason := "completed or gone"
			if inFlight(e, now) {
				reason = "being delivered"
			}
			logEvent(log, slog.LevelInfo, "event not retried: "+reason, e)
			left++
		case "discard":
			if inFlight(e, now) && !force {
				logEvent(log, slog.LevelWarn, "event not discarded: being delivered", e, "lease_owner", e.LeaseOwner, "lease_expires_at", e.LeaseExpiresAt)
				left++
				continue
			}
			d, err := h.store.Delete(ctx, e.ID)
			if err != nil {
				return n, left, fmt.Errorf("after discarding %d: %w", n, err)
			}
			if d == 0 {
				logEvent(log, slog.LevelInfo, "event not discarded: already gone", e)
				left++
				continue
			}
			if inFlight(e, now) {
				logEvent(log, slog.LevelWarn, "event discarded while being delivered (forced)", e, "lease_owner", e.LeaseOwner, "lease_expires_at", e.LeaseExpiresAt)
			} else {
				logEvent(log, slog.LevelInfo, "event discarded", e)
			}
			n++
		}
	}
	return n, left, nil
}

// logEvent logs an event in full, as `outbox discard` does: what the store no longer
// keeps after a discard, and what it was before a retry.
func logEvent(log *slog.Logger, level slog.Level, msg string, e outbox.Event, more ...any) {
	args := append([]any{"event_id", e.ID, "type", e.Type, "entity_id", e.EntityID, "user_id", e.UserID,
		"status", statusText(e), "attempts", e.Attempts, "ordering_key", e.OrderingKey, "last_error", e.LastError}, more...)
	log.Log(context.Background(), level, msg, args...)
}

// statusText is an event's status as the CLI logs it.
func statusText(e outbox.Event) string {
	switch {
	case e.GivenUp():
		return "given up"
	case e.Status == outbox.StatusFailed:
		return "failed (retrying)"
	}
	return string(e.Status)
}

// events reads the events with these IDs, in the order given; those that do not exist
// are left out.
func (h *Handler) events(ctx context.Context, ids []string) ([]outbox.Event, error) {
	byID := make(map[string]outbox.Event, len(ids))
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		found, err := h.store.List(ctx, outbox.Filter{IDs: chunk, Limit: len(chunk)})
		if err != nil {
			return nil, err
		}
		for _, e := range found {
			byID[e.ID] = e
		}
	}
	out := make([]outbox.Event, 0, len(byID))
	for _, id := range ids {
		if e, ok := byID[id]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// safeBack keeps a return address on the dashboard itself.
func (h *Handler) safeBack(back string) string {
	u, err := url.Parse(back)
	// Browsers read a backslash as a slash: "/\\evil.example" would leave the site.
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.Contains(back, "\\") ||
		!strings.HasPrefix(u.Path, h.cfg.Prefix+"/") || strings.HasPrefix(u.Path, "//") {
		return h.cfg.Prefix + "/events"
	}
	u.Path = path.Clean(u.Path) // "/ops/outbox/../x" is not under the prefix
	if !strings.HasPrefix(u.Path, h.cfg.Prefix+"/") {
		return h.cfg.Prefix + "/events"
	}
	q := u.Query()
	for _, k := range []string{"done", "n", "of", "held"} {
		q.Del(k)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// notice is the line an action's redirect asks the page to show.
func notice(v url.Values) string {
	act, ok := actions[v.Get("done")]
	if !ok {
		return ""
	}
	n, _ := strconv.Atoi(v.Get("n"))
	of, _ := strconv.Atoi(v.Get("of"))
	held, _ := strconv.Atoi(v.Get("held"))
	msg := fmt.Sprintf("%s %d of %d event(s).", capitalize(act.done), n, of)
	switch {
	case held > 0:
		msg += fmt.Sprintf(" %d being delivered under a live lease were left alone (the confirmation's box forces a discard).", held)
	case n < of && v.Get("done") == "retry":
		msg += " The others were completed or held under a live lease."
	case n < of:
		msg += " The others were gone already."
	}
	return msg
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func filterIDs(ids []string) outbox.Filter { return outbox.Filter{IDs: ids} }
