package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// completionsSettleForTest is dashboard's completionsSettle: the minutes that ended
// longer ago are counted once.
const completionsSettleForTest = 2 * time.Minute

type fixture struct {
	t     *testing.T
	h     *dashboard.Handler
	store outbox.Store
	o     outboxState
	logs  *bytes.Buffer
	csrf  string
}

// newFixture is a dashboard on an SQLite outbox in every state; cfg's Store, Clock and Logger
// are filled in.
func newFixture(t *testing.T, cfg dashboard.Config) *fixture {
	t.Helper()
	return newFixtureOn(t, sqlitetest.NewStore(t), cfg)
}

// newFixtureOn is newFixture on a store of the caller's.
func newFixtureOn(t *testing.T, s outbox.Store, cfg dashboard.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, store: s, o: fillOutbox(t, s), logs: &bytes.Buffer{}}
	cfg.Store, cfg.Clock = s, newClock()
	cfg.Logger = slog.New(slog.NewTextHandler(f.logs, nil))
	h, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	// The form token, as a page hands it out.
	if m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(f.get("/events/" + f.o.givenUp[0]).body); m != nil {
		f.csrf = m[1]
	}
	return f
}

type response struct {
	code   int
	body   string
	header http.Header
}

// do serves r as from a loopback client, with the token when the fixture has one.
func (f *fixture) do(r *http.Request) response {
	f.t.Helper()
	if r.RemoteAddr == "192.0.2.1:1234" { // httptest's default: make it local
		r.RemoteAddr = "127.0.0.1:5555"
	}
	if r.Host == "example.com" { // httptest's default: a loopback name, as a browser on this machine sends
		r.Host = "127.0.0.1:8080"
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return response{w.Code, w.Body.String(), w.Header()}
}

func (f *fixture) get(path string) response {
	return f.do(httptest.NewRequest(http.MethodGet, path, nil))
}

func (f *fixture) post(path string, form url.Values) response {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return f.do(r)
}

func (f *fixture) status(id string) (outbox.Event, bool) {
	e, err := f.store.Get(context.Background(), id)
	if errors.Is(err, outbox.ErrNotFound) {
		return e, false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return e, true
}

// card reads a figure of the overview by its element ID.
func card(t *testing.T, body, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + id + `"[^>]*><span class="n">([^<]*)</span>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no card %s in the page", id)
	}
	return m[1]
}

// listed returns the IDs of the events list's rows, in order.
func listed(body string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`<tr data-id="([^"]+)">`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func TestOverviewShowsCountsHealthAndChart(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{})
		r := f.get("/")
		if r.code != http.StatusOK {
			t.Fatalf("GET / = %d: %s", r.code, r.body)
		}
		for id, want := range map[string]string{
			"count-pending": "3", "count-processing": "1", "count-completed": "3", "count-retrying": "1",
			"count-given-up": "2", "count-stale": "3", "count-blocked": "1", "count-stuck": "1", "count-total": "10",
			"oldest": "10m0s",
		} {
			if got := card(t, r.body, id); got != want {
				t.Errorf("%s = %q, want %q", id, got, want)
			}
		}
		// 1 stuck, 3 stale, 3 of 6 outcomes within the window failed (> 10%), 2 given up
		// within it: four alerts.
		for _, want := range []string{`Unhealthy: 4 alert(s)`, `data-rule="stuck"`, `data-rule="stale"`, `data-rule="failure_rate"`, `data-rule="given_up"`,
			`id="window-completed">3<`, `id="window-failed">3<`, `<rect class="c"`, `<rect class="f"`, `payment.charge`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("overview lacks %q", want)
			}
		}
		if strings.Contains(r.body, `data-rule="pending"`) {
			t.Error("pending alert with 4 waiting, under the default 50")
		}
		live := f.get("/overview/live")
		if live.code != http.StatusOK || !strings.Contains(live.body, `id="count-given-up"`) || strings.Contains(live.body, "<html") {
			t.Errorf("GET /overview/live = %d, want the live fragment alone: %.200s", live.code, live.body)
		}
	})
}

func TestOverviewJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	r := f.get("/api/overview")
	if r.code != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/overview = %d %s", r.code, r.header.Get("Content-Type"))
	}
	for _, want := range []string{`"given_up": 2`, `"stuck": 1`, `"healthy": false`, `"failure_rate": 0.5`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("JSON lacks %s:\n%s", want, r.body)
		}
	}
}

func TestAccess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		token  string
		remote string
		auth   func(r *http.Request)
		want   int
	}{
		{"no token, loopback client", "", "127.0.0.1:4000", nil, http.StatusOK},
		{"no token, IPv6 loopback client", "", "[::1]:4000", nil, http.StatusOK},
		{"no token, remote client refused", "", "203.0.113.9:4000", nil, http.StatusForbidden},
		{"token, none given", "s3cret", "203.0.113.9:4000", nil, http.StatusUnauthorized},
		{"token, wrong bearer", "s3cret", "203.0.113.9:4000", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, http.StatusUnauthorized},
		{"token, wrong basic password", "s3cret", "127.0.0.1:4000", func(r *http.Request) { r.SetBasicAuth("ops", "nope") }, http.StatusUnauthorized},
		{"token as bearer", "s3cret", "203.0.113.9:4000", func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret") }, http.StatusOK},
		{"token as basic password", "s3cret", "203.0.113.9:4000", func(r *http.Request) { r.SetBasicAuth("ops", "s3cret") }, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := dashboard.New(dashboard.Config{Store: sqlitetest.NewStore(t), Token: tc.token, Logger: outboxtest.Discard})
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"/", "/events", "/api/overview", "/static/app.js"} {
				r := httptest.NewRequest(http.MethodGet, path, nil)
				r.RemoteAddr, r.Host = tc.remote, "127.0.0.1:8080"
				if tc.auth != nil {
					tc.auth(r)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != tc.want {
					t.Errorf("GET %s = %d, want %d: %s", path, w.Code, tc.want, w.Body)
				}
				if tc.want == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic") {
					t.Errorf("GET %s: 401 without a basic-auth challenge", path)
				}
			}
		})
	}
}

func TestEventsFilters(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{})
		o := f.o
		tests := []struct {
			query string
			want  []string
		}{
			{"", append(append(append(append(slices.Clone(o.completed), o.pending...), o.retrying), o.givenUp...), o.blocked, o.stuck)},
			{"status=completed", o.completed},
			{"given_up=1", o.givenUp},
			{"status=failed", append([]string{o.retrying}, o.givenUp...)},
			{"retrying=1", []string{o.retrying}},
			{"status=failed&retrying=1", []string{o.retrying}},
			{"type=order.shipped&retrying=1", []string{o.retrying}},
			{"stuck=1", []string{o.stuck}},
			{"blocked=1", []string{o.blocked}},
			{"stale=1", append(slices.Clone(o.pending), o.blocked)},
			{"type=payment.charge", o.givenUp},
			{"user=carol", []string{o.pending[1], o.stuck}},
			{"status=pending&user=bob", o.pending[:1]},
			{"q=" + url.QueryEscape(o.retrying+", "+o.stuck), []string{o.retrying, o.stuck}},
			{"from=2026-03-04T09:00&to=2026-03-04T10:01", nil}, // filled below: every event
			{"from=2026-03-04T10:01", nil},
			{"to=2026-03-04T09:59", nil},
		}
		for i := range tests {
			if strings.HasPrefix(tests[i].query, "from=2026-03-04T09:00&to=") {
				tests[i].want = tests[0].want
			}
		}
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				// Newest first by default, oldest first on request; the same events either way.
				for _, order := range []string{"", "order=oldest&"} {
					r := f.get("/events?" + order + tc.query)
					if r.code != http.StatusOK {
						t.Fatalf("GET /events?%s%s = %d: %s", order, tc.query, r.code, r.body)
					}
					want := tc.want
					if order == "" {
						want = reversed(want)
					}
					if got := listed(r.body); !slices.Equal(got, want) {
						t.Fatalf("%q listed %v, want %v", order, got, want)
					}
					if got := matchCount(t, r.body); got != len(want) {
						t.Errorf("%q: the match count says %d, want %d", order, got, len(want))
					}
				}
			})
		}
	})
}

// reversed is a reversed copy of ids.
func reversed(ids []string) []string {
	out := slices.Clone(ids)
	slices.Reverse(out)
	return out
}

// matchCount reads the events list's match count.
func matchCount(t *testing.T, body string) int {
	t.Helper()
	m := regexp.MustCompile(`<strong id="match-count">([0-9,]+)</strong> events? match`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no match count in the page: %.600s", body[max(strings.Index(body, `id="matches"`), 0):])
	}
	n, err := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEventsBadFilterSaysWhy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	for query, want := range map[string]string{
		"status=done":                               "unknown status",
		"q=not-an-id":                               "is not an event ID",
		"from=yesterday":                            "is not a time",
		"status=completed&stuck=1":                  "stuck events are processing",
		"status=pending&given_up=1":                 "given up events are failed",
		"from=2026-03-04T11:00&to=2026-03-04T10:00": "from must be before to",
	} {
		r := f.get("/events?" + query)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, want) {
			t.Errorf("GET /events?%s = %d, want 400 saying %q: %.300s", query, r.code, want, r.body)
		}
	}
}

func TestEventsPagesWithTheCursor(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		s := newStore(t)
		var want []string
		for i := range 23 {
			e := outbox.NewEvent("t", "e", "u")
			if err := s.Enqueue(context.Background(), t0.Add(time.Duration(i)*time.Second), e); err != nil {
				t.Fatal(err)
			}
			want = append(want, e.ID)
		}
		h, err := dashboard.New(dashboard.Config{Store: s, PageSize: 5, Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		f := &fixture{t: t, h: h}
		for _, order := range []string{"newest", "oldest"} {
			var got []string
			next, pages := "/events?type=t", 0
			if order == "oldest" {
				next += "&order=oldest"
			}
			for next != "" {
				r := f.get(next)
				rows := listed(r.body)
				if len(rows) > 5 {
					t.Fatalf("page %d has %d rows, over the page size", pages, len(rows))
				}
				if n := matchCount(t, r.body); n != 23 {
					t.Fatalf("page %d says %d events match, want 23", pages, n)
				}
				got = append(got, rows...)
				pages++
				if pages > 10 {
					t.Fatalf("still paging after %d pages (at %s)", pages, next)
				}
				next = ""
				if m := regexp.MustCompile(`href="(/events\?[^"]*)" id="next-page"`).FindStringSubmatch(r.body); m != nil {
					next = strings.ReplaceAll(m[1], "&amp;", "&")
				}
			}
			w := want
			if order == "newest" {
				w = reversed(want)
			}
			if !slices.Equal(got, w) || pages != 5 {
				t.Fatalf("%s first: paged through %d pages listing %d events, want 5 pages and the 23 in order", order, pages, len(got))
			}
		}
	})
}

func TestEventDetailShowsEverythingEscaped(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{})
		r := f.get("/events/" + f.o.pending[0])
		if r.code != http.StatusOK {
			t.Fatalf("GET event = %d: %s", r.code, r.body)
		}
		for _, hostile := range []string{"<script>alert(1)", "<img src=x", "<b onmouseover"} {
			if strings.Contains(r.body, hostile) {
				t.Errorf("the page contains %q as markup", hostile)
			}
		}
		for _, want := range []string{
			`&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;`, // the payload, as text
			"\n  &#34;note&#34;:",                               // pretty-printed
			`&lt;b onmouseover=alert(3)&gt;x&lt;/b&gt;`,         // metadata, as text
			`order.created`, `order-4`, `bob`,
		} {
			if !strings.Contains(r.body, want) {
				t.Errorf("event page lacks %q", want)
			}
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}

		g := f.get("/events/" + f.o.givenUp[0])
		for _, want := range []string{`503 &lt;script&gt;alert(&#34;err&#34;)&lt;/script&gt;`, `attempt 1 failed`, `given up: waits for an operator`, `order-7`} {
			if !strings.Contains(g.body, want) {
				t.Errorf("given-up event page lacks %q", want)
			}
		}
		if strings.Contains(g.body, `<script>alert("err")`) {
			t.Error("the error is rendered as markup")
		}

		b := f.get("/events/" + f.o.blocked)
		if !strings.Contains(b.body, `id="blocked"`) || !strings.Contains(b.body, `href="/events/`+f.o.givenUp[0]+`"`) {
			t.Errorf("blocked event page does not name the given-up head %s", f.o.givenUp[0])
		}
		s := f.get("/events/" + f.o.stuck)
		if !strings.Contains(s.body, "held by <code>relay-1</code>") || !strings.Contains(s.body, "expired: stuck") {
			t.Error("stuck event page does not show its expired lease")
		}
		if r := f.get("/events/" + "0190a8c2-0000-7000-8000-000000000000"); r.code != http.StatusNotFound {
			t.Errorf("unknown event = %d, want 404", r.code)
		}
		if r := f.get("/events/nope"); r.code != http.StatusNotFound {
			t.Errorf("malformed ID = %d, want 404", r.code)
		}
	})
}

func TestRetryAsksThenRetriesAndLogs(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{})
		id := f.o.givenUp[0]
		form := url.Values{"csrf": {f.csrf}, "ids": {id}, "back": {"/events/" + id}}
		r := f.post("/actions/retry", form)
		if r.code != http.StatusOK || !strings.Contains(r.body, "Retry 1 event(s)?") {
			t.Fatalf("first POST = %d, want the confirmation: %.300s", r.code, r.body)
		}
		if e, _ := f.status(id); !e.GivenUp() {
			t.Fatal("the event changed before the confirmation")
		}
		form.Set("confirm", "yes")
		r = f.post("/actions/retry", form)
		if r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/events/"+id+"?done=retry&n=1") {
			t.Fatalf("confirmed POST = %d to %q", r.code, r.header.Get("Location"))
		}
		if e, _ := f.status(id); e.Status != outbox.StatusPending || e.Attempts != 0 {
			t.Fatalf("after retry: %s with %d attempts, want pending with 0", e.Status, e.Attempts)
		}
		if !strings.Contains(f.get(r.header.Get("Location")).body, "Retried 1 of 1 event(s).") {
			t.Error("the event page does not say it was retried")
		}
		if log := f.logs.String(); !strings.Contains(log, "action=retry who=local") || !strings.Contains(log, id) || !strings.Contains(log, "retried=1") {
			t.Errorf("action log: %s", log)
		}
	})
}

func TestDiscardTheFilteredSet(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{Token: "s3cret"})
		auth := func(r *http.Request) *http.Request { r.SetBasicAuth("dana", "s3cret"); return r }
		post := func(form url.Values) response {
			r := httptest.NewRequest(http.MethodPost, "/actions/discard", strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return f.do(auth(r))
		}
		page := f.do(auth(httptest.NewRequest(http.MethodGet, "/events?given_up=1", nil)))
		csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page.body)
		if csrf == nil {
			t.Fatal("the filtered list offers no action form")
		}
		r := post(url.Values{"csrf": {csrf[1]}, "query": {"given_up=1"}, "back": {"/events?given_up=1"}})
		if r.code != http.StatusOK || !strings.Contains(r.body, "Discard 2 event(s)?") {
			t.Fatalf("first POST = %d: %.400s", r.code, r.body)
		}
		// The confirmation carries the IDs it showed; confirm exactly those.
		var confirm = url.Values{"csrf": {csrf[1]}, "confirm": {"yes"}, "back": {"/events?given_up=1"}}
		for _, m := range regexp.MustCompile(`name="ids" value="([^"]+)"`).FindAllStringSubmatch(r.body, -1) {
			confirm.Add("ids", m[1])
		}
		if got := confirm["ids"]; !slices.Equal(got, f.o.givenUp) {
			t.Fatalf("confirmation lists %v, want %v", got, f.o.givenUp)
		}
		if r := post(confirm); r.code != http.StatusSeeOther {
			t.Fatalf("confirmed POST = %d: %s", r.code, r.body)
		}
		for _, id := range f.o.givenUp {
			if _, ok := f.status(id); ok {
				t.Errorf("%s still there after discard", id)
			}
		}
		if _, ok := f.status(f.o.retrying); !ok {
			t.Error("an event outside the filter was discarded")
		}
		if log := f.logs.String(); !strings.Contains(log, "action=discard who=dana") || !strings.Contains(log, "discarded=2") {
			t.Errorf("action log: %s", log)
		}
	})
}

func TestActionsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		readOnly bool
		form     func(csrf string) url.Values
		header   map[string]string
		want     int
		says     string
	}{
		{"no form token", false, func(string) url.Values { return url.Values{"confirm": {"yes"}} }, nil, 403, "form token"},
		{"wrong form token", false, func(string) url.Values { return url.Values{"csrf": {"00ff"}, "confirm": {"yes"}} }, nil, 403, "form token"},
		{"cross-site request", false, func(c string) url.Values { return url.Values{"csrf": {c}, "confirm": {"yes"}} },
			map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-origin"},
		{"foreign origin", false, func(c string) url.Values { return url.Values{"csrf": {c}, "confirm": {"yes"}} },
			map[string]string{"Origin": "https://evil.example"}, 403, "cross-origin"},
		{"read-only", true, func(c string) url.Values { return url.Values{"csrf": {c}, "confirm": {"yes"}} }, nil, 403, "read-only"},
		{"no filter", false, func(c string) url.Values { return url.Values{"csrf": {c}, "confirm": {"yes"}, "query": {""}} }, nil, 400, "choose a filter"},
		{"malformed ID", false, func(c string) url.Values { return url.Values{"csrf": {c}, "confirm": {"yes"}, "ids": {"x"}} }, nil, 400, "not an event ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, dashboard.Config{ReadOnly: tc.readOnly})
			csrf := f.csrf
			if tc.readOnly { // a read-only page offers no form: take the token from a writable twin
				csrf = "irrelevant"
			}
			for _, action := range []string{"retry", "discard"} {
				form := tc.form(csrf)
				if !form.Has("ids") && !form.Has("query") {
					form["ids"] = f.o.givenUp
				}
				r := httptest.NewRequest(http.MethodPost, "/actions/"+action, strings.NewReader(form.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				for k, v := range tc.header {
					r.Header.Set(k, v)
				}
				got := f.do(r)
				if got.code != tc.want || !strings.Contains(got.body, tc.says) {
					t.Errorf("POST /actions/%s = %d, want %d saying %q: %.300s", action, got.code, tc.want, tc.says, got.body)
				}
			}
			for _, id := range f.o.givenUp {
				if e, ok := f.status(id); !ok || !e.GivenUp() {
					t.Errorf("%s changed by a refused action", id)
				}
			}
		})
	}
}

func TestReadOnlyOffersNoActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{ReadOnly: true})
	for _, path := range []string{"/events/" + f.o.givenUp[0], "/events?given_up=1"} {
		r := f.get(path)
		if r.code != http.StatusOK || strings.Contains(r.body, "/actions/") || !strings.Contains(r.body, "read-only") {
			t.Errorf("GET %s in read-only mode = %d, offering actions: %v", path, r.code, strings.Contains(r.body, "/actions/"))
		}
	}
}

func TestPagesLoadNothingFromTheNetwork(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	external := regexp.MustCompile(`(src|href|action)="(https?:)?//`)
	for _, path := range []string{"/", "/events", "/events/" + f.o.pending[0], "/static/style.css", "/static/app.js"} {
		r := f.get(path)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, r.code)
		}
		if m := external.FindString(r.body); m != "" || strings.Contains(r.body, "@import") || strings.Contains(r.body, "url(http") {
			t.Errorf("%s refers to the network: %q", path, m)
		}
	}
}

func TestMountedUnderAPrefix(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	fillOutbox(t, s)
	h, err := dashboard.New(dashboard.Config{Store: s, Prefix: "/ops/outbox", Clock: newClock(), Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/outbox/", http.StripPrefix("/ops/outbox", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/ops/outbox/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `href="/ops/outbox/events?given_up=1"`) ||
		!strings.Contains(string(body), `src="/ops/outbox/static/app.js"`) {
		t.Fatalf("GET under the prefix = %d; links not prefixed: %.500s", res.StatusCode, body)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	tests := []struct {
		name  string
		cfg   dashboard.Config
		field string
	}{
		{"no store", dashboard.Config{}, "dashboard.Config.Store"},
		{"negative page size", dashboard.Config{Store: s, PageSize: -1}, "dashboard.Config.PageSize"},
		{"negative batch", dashboard.Config{Store: s, MaxBatch: -5}, "dashboard.Config.MaxBatch"},
		{"negative refresh", dashboard.Config{Store: s, RefreshInterval: -time.Second}, "dashboard.Config.RefreshInterval"},
		{"chart window too long", dashboard.Config{Store: s, ChartWindow: 48 * time.Hour}, "dashboard.Config.ChartWindow"},
		{"prefix without slash", dashboard.Config{Store: s, Prefix: "outbox"}, "dashboard.Config.Prefix"},
		{"prefix ending in slash", dashboard.Config{Store: s, Prefix: "/outbox/"}, "dashboard.Config.Prefix"},
		{"failure rate above 1", dashboard.Config{Store: s, Health: outbox.HealthRules{MaxFailureRate: 2}}, "dashboard.Config.Health.MaxFailureRate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			var fe *outbox.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, outbox.ErrInvalid) {
				t.Fatalf("Validate() = %v, want a FieldError on %s", err, tc.field)
			}
			if _, err := dashboard.New(tc.cfg); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
	if err := (dashboard.Config{Store: s}).Validate(); err != nil {
		t.Fatalf("zero config with a store: %v", err)
	}
}

func TestOverviewIsSharedUntilAnActionChangesTheStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{RefreshInterval: time.Hour})
	if got := card(t, f.get("/").body, "count-total"); got != "10" {
		t.Fatalf("total = %s, want 10", got)
	}
	if err := f.store.Enqueue(context.Background(), now, outbox.NewEvent("t", "late", "u")); err != nil {
		t.Fatal(err)
	}
	// Within the refresh interval every viewer gets the figures already computed.
	if got := card(t, f.get("/overview/live").body, "count-total"); got != "10" {
		t.Fatalf("total = %s within the refresh interval, want the cached 10", got)
	}
	form := url.Values{"csrf": {f.csrf}, "ids": {f.o.givenUp[1]}, "confirm": {"yes"}}
	if r := f.post("/actions/discard", form); r.code != http.StatusSeeOther {
		t.Fatalf("discard = %d", r.code)
	}
	if got := card(t, f.get("/").body, "count-total"); got != "10" { // 10 + the late one - the discarded one
		t.Fatalf("total after the action = %s, want 10 (11 - 1)", got)
	}
	if got := card(t, f.get("/").body, "count-given-up"); got != "1" {
		t.Fatalf("given up after the action = %s, want 1", got)
	}
}

func TestActionReturnsOnlyToTheDashboard(t *testing.T) {
	t.Parallel()
	for _, back := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", ""} {
		f := newFixture(t, dashboard.Config{})
		r := f.post("/actions/retry", url.Values{"csrf": {f.csrf}, "ids": {f.o.givenUp[0]}, "confirm": {"yes"}, "back": {back}})
		if loc := r.header.Get("Location"); r.code != http.StatusSeeOther || !strings.HasPrefix(loc, "/events?done=retry") {
			t.Errorf("back=%q: redirected (%d) to %q, want the events list", back, r.code, loc)
		}
	}
}

func TestTimeRangeFindsItsEventsAcrossGaps(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		s := newStore(t)
		ctx := context.Background()
		var kept []outbox.Event
		for i := range 40 {
			e := outbox.NewEvent("t", "e", "u")
			if err := s.Enqueue(ctx, t0.Add(time.Duration(i)*time.Minute), e); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 { // holes in the numbering, as deletes and rolled-back inserts leave
				if _, err := s.Delete(ctx, e.ID); err != nil {
					t.Fatal(err)
				}
				continue
			}
			kept = append(kept, *e)
		}
		h, err := dashboard.New(dashboard.Config{Store: s, Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		f := &fixture{t: t, h: h}
		tests := []struct{ from, to time.Duration }{
			{10 * time.Minute, 20 * time.Minute}, {0, 40 * time.Minute}, {-time.Hour, 5 * time.Minute},
			{39 * time.Minute, time.Hour}, {12 * time.Minute, 13 * time.Minute}, {41 * time.Minute, time.Hour},
		}
		for _, tc := range tests {
			from, to := t0.Add(tc.from), t0.Add(tc.to)
			var want []string
			for _, e := range kept {
				if !e.CreatedAt.Before(from) && e.CreatedAt.Before(to) {
					want = append(want, e.ID)
				}
			}
			q := url.Values{"from": {from.Format("2006-01-02T15:04")}, "to": {to.Format("2006-01-02T15:04")}}
			if got := listed(f.get("/events?order=oldest&" + q.Encode()).body); !slices.Equal(got, want) {
				t.Errorf("from %s to %s, oldest first: listed %d events, want %d", tc.from, tc.to, len(got), len(want))
			}
			r := f.get("/events?" + q.Encode())
			if got := listed(r.body); !slices.Equal(got, reversed(want)) {
				t.Errorf("from %s to %s, newest first: listed %d events, want %d", tc.from, tc.to, len(got), len(want))
			}
			if n := matchCount(t, r.body); n != len(want) {
				t.Errorf("from %s to %s: the match count says %d, want %d", tc.from, tc.to, n, len(want))
			}
		}
	})
}

func TestOverviewShowsPausedTypes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	pauser, ok := f.store.(outbox.TypePauser)
	if !ok {
		t.Skip("the SQLite store does not pause types")
	}
	if err := pauser.PauseType(context.Background(), "user.renamed", now); err != nil {
		t.Fatal(err)
	}
	body := f.get("/").body
	if !strings.Contains(body, `id="paused"`) || !strings.Contains(body, "<strong>user.renamed</strong>; 1 event(s) waiting.") {
		t.Fatalf("overview does not show the paused type: %.2000s", body[strings.Index(body, "By type"):])
	}
}

// timelineRecorder is a store that notes the timeline queries it answers.
type timelineRecorder struct {
	*sqlite.Store
	mu      sync.Mutex
	queries []outbox.TimelineQuery
}

func (r *timelineRecorder) Timeline(ctx context.Context, q outbox.TimelineQuery) ([]outbox.TimelineBucket, error) {
	r.mu.Lock()
	r.queries = append(r.queries, q)
	r.mu.Unlock()
	return r.Store.Timeline(ctx, q)
}

func (r *timelineRecorder) last() outbox.TimelineQuery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queries[len(r.queries)-1]
}

func TestChartCountsPastMinutesOnce(t *testing.T) {
	t.Parallel()
	rec := &timelineRecorder{Store: sqlitetest.NewStore(t)}
	clock := newClock()
	// Three completions at t0, counted once and kept; two more later, in the minute shown last.
	fillOutbox(t, rec)
	h, err := dashboard.New(dashboard.Config{Store: rec, Clock: clock, RefreshInterval: time.Nanosecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, h: h}
	windowCompleted := func() int {
		t.Helper()
		r := f.get("/api/overview")
		var o struct {
			Window struct{ Completed int }
		}
		if err := json.Unmarshal([]byte(r.body), &o); r.code != http.StatusOK || err != nil {
			t.Fatalf("GET /api/overview = %d, %v", r.code, err)
		}
		return o.Window.Completed
	}
	if n := windowCompleted(); n != 3 {
		t.Fatalf("first overview: %d completed in the window, want 3", n)
	}
	if q := rec.last(); !q.CompletedSince.Equal(q.Since) {
		t.Fatalf("first overview counted completions from %s, want the whole window from %s", q.CompletedSince, q.Since)
	}

	// Later: the minute of t0 is closed, and two events complete now.
	clock.Set(now.Add(5 * time.Minute))
	ctx := context.Background()
	late := []*outbox.Event{outbox.NewEvent("t", "late-1", "u"), outbox.NewEvent("t", "late-2", "u")}
	if err := rec.Enqueue(ctx, clock.Now(), late...); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Claim(ctx, outbox.ClaimParams{Owner: "r", Now: clock.Now(), LeaseUntil: clock.Now().Add(time.Minute), Limit: 100}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Settle(ctx, "r", clock.Now(), []outbox.Outcome{{ID: late[0].ID, Result: outbox.Delivered}, {ID: late[1].ID, Result: outbox.Delivered}}); err != nil {
		t.Fatal(err)
	}
	// The overview is recomputed (the refresh interval is over at once); the first answer may be the old figures.
	deadline := time.Now().Add(30 * time.Second)
	for n := windowCompleted(); n != 5; n = windowCompleted() {
		if time.Now().After(deadline) {
			t.Fatalf("the window shows %d completions, want 5", n)
		}
		time.Sleep(5 * time.Millisecond) // polling for the background refresh, not waiting out a timer
	}
	q := rec.last()
	if want := now.Add(5 * time.Minute).Truncate(time.Minute).Add(-completionsSettleForTest); !q.CompletedSince.After(q.Since) || q.CompletedSince.After(want) {
		t.Fatalf("later overview counted completions from %s; want from the closed minutes on (after %s, by %s)", q.CompletedSince, q.Since, want)
	}
}

// TestOverviewShowsWhatWaitsOnTheLog: with LogWaiting (the log layout), the overview shows
// the events on the log and the oldest one's age beside the store's counts, in its JSON
// too, and alerts (log_behind) once the oldest has waited longer than MaxOldestDue;
// without it, there is no log section.
func TestOverviewShowsWhatWaitsOnTheLog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		age    time.Duration
		behind bool
	}{
		{name: "keeping up", age: 2 * time.Second},
		{name: "behind", age: 20 * time.Minute, behind: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, dashboard.Config{LogWaiting: func(context.Context) (int64, time.Time, error) {
				return 1234, now.Add(-tc.age), nil
			}})
			body := f.get("/").body
			if got := card(t, body, "log-waiting"); got != "1234" {
				t.Errorf("log-waiting = %q, want 1234", got)
			}
			if got, want := card(t, body, "log-oldest"), tc.age.String(); got != want {
				t.Errorf("log-oldest = %q, want %q", got, want)
			}
			if got := strings.Contains(body, `data-rule="log_behind"`); got != tc.behind {
				t.Errorf("log_behind alert shown: %v, want %v", got, tc.behind)
			}
			js := f.get("/api/overview").body
			if want := fmt.Sprintf(`"behind": %v`, tc.behind); !strings.Contains(js, `"events": 1234`) || !strings.Contains(js, want) {
				t.Errorf("JSON lacks the log's events or %s:\n%s", want, js)
			}
		})
	}
	t.Run("no log", func(t *testing.T) {
		t.Parallel()
		body := newFixture(t, dashboard.Config{}).get("/").body
		if strings.Contains(body, `id="log-waiting"`) || strings.Contains(body, "on the log") {
			t.Error("a dashboard without LogWaiting shows a log section")
		}
	})
}

// TestOverviewCountsTheLogsDeliveries: with LogDelivered (the log layout, whose
// deliveries leave no row), the overview adds what the log delivered in the health
// window to the window's completed events, so that a few failures among many log
// deliveries do not trip the failure-rate rule, which they do on the store's counts
// alone; it asks for the rules' window, and shows the count.
func TestOverviewCountsTheLogsDeliveries(t *testing.T) {
	t.Parallel()
	body := newFixture(t, dashboard.Config{}).get("/").body
	if !strings.Contains(body, `data-rule="failure_rate"`) || strings.Contains(body, `id="log-delivered"`) {
		t.Fatal("without the log's deliveries: want the failure-rate alert (3 failures of 6 outcomes) and no log count")
	}
	var asked atomic.Int64
	f := newFixture(t, dashboard.Config{LogDelivered: func(_ context.Context, since time.Time) (int64, error) {
		asked.Store(since.Unix())
		return 1000, nil
	}})
	body = f.get("/").body
	if strings.Contains(body, `data-rule="failure_rate"`) {
		t.Error("the failure-rate alert fired with 1000 deliveries from the log beside 3 failures")
	}
	if !strings.Contains(body, `data-rule="given_up"`) {
		t.Error("the given-up alert went away: only the failure rate takes the log's deliveries")
	}
	if got := card(t, body, "log-delivered"); got != "1000" {
		t.Errorf("log-delivered = %q, want 1000", got)
	}
	if got, want := asked.Load(), now.Add(-outbox.DefaultHealthWindow).Unix(); got != want {
		t.Errorf("LogDelivered asked from %s, want the health window's start %s", time.Unix(got, 0).UTC(), time.Unix(want, 0).UTC())
	}
	if js := f.get("/api/overview").body; !strings.Contains(js, `"log_delivered": 1000`) || !strings.Contains(js, `"completed": 1003`) {
		t.Errorf("JSON lacks log_delivered 1000 or the window's 1003 completed:\n%s", js)
	}
}

// fakeLogTimeline is a log's deliveries per minute (Config.LogTimeline), with the
// ranges it was asked for.
type fakeLogTimeline struct {
	mu    sync.Mutex
	count map[time.Time]int
	asked [][2]time.Time
}

func (f *fakeLogTimeline) deliver(minute time.Time, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count[minute] += n
}

func (f *fakeLogTimeline) timeline(_ context.Context, since, until time.Time) ([]outbox.TimelineBucket, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, [2]time.Time{since, until})
	var out []outbox.TimelineBucket
	for m, n := range f.count {
		if !m.Before(since.Truncate(time.Minute)) && m.Before(until) {
			out = append(out, outbox.TimelineBucket{Minute: m, Completed: n})
		}
	}
	slices.SortFunc(out, func(a, b outbox.TimelineBucket) int { return a.Minute.Compare(b.Minute) })
	return out, nil
}

func (f *fakeLogTimeline) lastAsked() [2]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[len(f.asked)-1]
}

// TestChartCountsTheLogsDeliveries: with LogTimeline (the log layout, whose deliveries
// leave no row), the throughput chart's minutes and the window's totals include what
// the log delivered in each minute, beside the table's completions and failures. Across
// refreshes the log is asked only for the minutes the chart has not kept, as the store
// is, and a kept minute's deliveries are neither lost nor counted twice.
func TestChartCountsTheLogsDeliveries(t *testing.T) {
	t.Parallel()
	rec := &timelineRecorder{Store: sqlitetest.NewStore(t)}
	fillOutbox(t, rec) // 3 completed and 3 failed at t0 (10:00)
	m := func(d time.Duration) time.Time { return t0.Add(d).Truncate(time.Minute) }
	lg := &fakeLogTimeline{count: map[time.Time]int{m(0): 100, m(7 * time.Minute): 40, m(10 * time.Minute): 7}}
	clock := newClock() // 10:10
	h, err := dashboard.New(dashboard.Config{Store: rec, Clock: clock, RefreshInterval: time.Nanosecond, LogTimeline: lg.timeline, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, h: h}
	type overviewJSON struct {
		At     time.Time
		Window struct {
			Completed, Failed int
			FailureRate       float64 `json:"failure_rate"`
		}
		Timeline []outbox.TimelineBucket
	}
	// overviewAt reads the overview computed at the clock's time, polling for the
	// background refresh (the first answer after a change may be the old figures).
	overviewAt := func(at time.Time) overviewJSON {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := f.get("/api/overview")
			var o overviewJSON
			if err := json.Unmarshal([]byte(r.body), &o); r.code != http.StatusOK || err != nil {
				t.Fatalf("GET /api/overview = %d, %v", r.code, err)
			}
			if o.At.Equal(at) {
				return o
			}
			if time.Now().After(deadline) {
				t.Fatalf("the overview is still from %s, want %s", o.At, at)
			}
			time.Sleep(5 * time.Millisecond) // polling for the background refresh, not waiting out a timer
		}
	}
	completedAt := func(o overviewJSON, minute time.Time) int {
		t.Helper()
		for _, b := range o.Timeline {
			if b.Minute.Equal(minute) {
				return b.Completed
			}
		}
		t.Fatalf("no bucket for %s in the timeline", minute.Format(time.TimeOnly))
		return 0
	}
	check := func(what string, o overviewJSON, completed int, byMinute map[time.Time]int) {
		t.Helper()
		if o.Window.Completed != completed || o.Window.Failed != 3 {
			t.Errorf("%s: window completed %d, failed %d; want %d and 3", what, o.Window.Completed, o.Window.Failed, completed)
		}
		if want := 3 / float64(completed+3); math.Abs(o.Window.FailureRate-want) > 1e-9 {
			t.Errorf("%s: window failure rate %v, want 3 of %d = %v", what, o.Window.FailureRate, completed+3, want)
		}
		for minute, want := range byMinute {
			if got := completedAt(o, minute); got != want {
				t.Errorf("%s: %s's bucket has %d completed, want %d", what, minute.Format(time.TimeOnly), got, want)
			}
		}
	}

	o := overviewAt(now)
	check("first overview", o, 3+100+40+7, map[time.Time]int{m(0): 103, m(7 * time.Minute): 40, m(10 * time.Minute): 7})
	if got, q := lg.lastAsked(), rec.last(); !got[0].Equal(q.Since) || !got[1].Equal(q.Until) {
		t.Errorf("first overview asked the log for [%s, %s), want the chart's window [%s, %s)", got[0], got[1], q.Since, q.Until)
	}
	if body := f.get("/").body; !strings.Contains(body, "10:00 UTC: 103 completed, 3 failed") {
		t.Error("the chart's 10:00 bar does not say 103 completed (3 from the table, 100 from the log), 3 failed")
	}

	// Five minutes on: 10:00 and 10:07 are kept; 10:10 was still open, and the log
	// delivered 3 more in it, then 20 at 10:15.
	clock.Set(now.Add(5 * time.Minute))
	lg.deliver(m(10*time.Minute), 3)
	lg.deliver(m(15*time.Minute), 20)
	o = overviewAt(clock.Now())
	check("a refresh later", o, 3+100+40+10+20, map[time.Time]int{m(0): 103, m(7 * time.Minute): 40, m(10 * time.Minute): 10, m(15 * time.Minute): 20})
	if got, q := lg.lastAsked(), rec.last(); !got[0].Equal(q.CompletedSince) || !q.CompletedSince.After(q.Since) {
		t.Errorf("the refresh asked the log from %s; want from where the store's completions were counted, %s, after the window's start %s", got[0], q.CompletedSince, q.Since)
	}
}

// A LogTimeline that fails fails the overview, naming the log, as a store's count that
// fails does: a chart without the log's deliveries would show a flat line again.
func TestChartFailsWhenTheLogCannotBeRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{LogTimeline: func(context.Context, time.Time, time.Time) ([]outbox.TimelineBucket, error) {
		return nil, errors.New("connection refused")
	}})
	r := f.get("/api/overview")
	if r.code != http.StatusInternalServerError || !strings.Contains(r.body, "what the log delivered per minute: connection refused") {
		t.Errorf("GET /api/overview with a failing LogTimeline = %d: %.300s", r.code, r.body)
	}
}
