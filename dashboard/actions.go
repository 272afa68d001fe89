package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
)

// The actions an operator may take.
var actions = map[string]struct{ verb, done string }{
	"retry":   {"Retry", "retried"},
	"discard": {"Discard", "discarded"},
}

type confirmPage struct {
	Action, Verb string
	IDs          []string
	Shown        []string // the first few IDs, to show
	More         int      // how many more there are
	Capped       bool     // the filtered set has more events than MaxBatch
	MaxBatch     int
	Back         string
	Query        string // the filter the set came from, to show
}

// serveAction takes an action on events named by ID (ids, repeated) or on the events
// of a list query. The first POST shows what would be done and asks to confirm; the
// confirmation posts the exact IDs shown, with confirm=yes, and only then does the
// store change.
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
		q.After = 0
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
		events, next, err := h.find(ctx, sel, h.cfg.MaxBatch)
		if err != nil {
			h.storeError(w, r, err)
			return
		}
		for _, e := range events {
			ids = append(ids, e.ID)
		}
		capped = next != 0
	}
	if len(ids) == 0 {
		h.fail(w, r, http.StatusBadRequest, "no event matches: nothing to "+name)
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		c := confirmPage{Action: name, Verb: act.verb, IDs: ids, Capped: capped, MaxBatch: h.cfg.MaxBatch, Back: back, Query: query}
		c.Shown = ids[:min(len(ids), 10)]
		c.More = len(ids) - len(c.Shown)
		h.render(w, r, http.StatusOK, "confirm", page{Title: act.verb + " events", Nav: "events", Data: c})
		return
	}

	var n int
	var err error
	switch name {
	case "retry":
		n, err = h.store.Retry(ctx, h.cfg.Clock.Now(), filterIDs(ids))
	case "discard":
		n, err = h.store.Delete(ctx, ids...)
	}
	h.invalidate()
	logIDs := ids[:min(len(ids), 20)]
	if err != nil {
		h.log.Error("action failed", "action", name, "who", who(ctx), "remote", r.RemoteAddr, "requested", len(ids), "ids", logIDs, "err", err)
		h.storeError(w, r, err)
		return
	}
	h.log.Info("action", "action", name, "who", who(ctx), "remote", r.RemoteAddr,
		"requested", len(ids), act.done, n, "ids", logIDs, "filter", query)
	if name == "discard" && strings.HasPrefix(back, h.cfg.Prefix+"/events/") {
		back = h.cfg.Prefix + "/events" // the event is gone
	}
	sep := "?"
	if strings.Contains(back, "?") {
		sep = "&"
	}
	http.Redirect(w, r, back+sep+"done="+name+"&n="+strconv.Itoa(n)+"&of="+strconv.Itoa(len(ids)), http.StatusSeeOther)
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
	for _, k := range []string{"done", "n", "of"} {
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
	msg := fmt.Sprintf("%s %d of %d event(s).", capitalize(act.done), n, of)
	if n < of && v.Get("done") == "retry" {
		msg += " The others were completed or held under a live lease."
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
