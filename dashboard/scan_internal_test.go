package dashboard

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// TestDashboardPagesCutShortGoOnWhereTheyStopped: when a page runs out of store queries
// before it is full (the dashboard filtering what the store returns), it shows what it
// found and its next link goes on from where the reading stopped; the pages together list
// each matching event once, newest and oldest first.
func TestDashboardPagesCutShortGoOnWhereTheyStopped(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	var events []*outbox.Event
	for i := range 300 {
		events = append(events, outbox.NewEvent("charge", "c-"+strconv.Itoa(i), "u"))
	}
	if err := s.Enqueue(ctx, t0, events...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, outbox.ClaimParams{Owner: "r", Now: t0, LeaseUntil: t0.Add(time.Minute), Limit: 1000}); err != nil {
		t.Fatal(err)
	}
	var outcomes []outbox.Outcome
	var retrying []string
	for i, e := range events {
		o := outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "500"}
		if i%37 == 5 { // 8 of 300
			o.NextAttemptAt = t0.Add(time.Hour)
			retrying = append(retrying, e.ID)
		}
		outcomes = append(outcomes, o)
	}
	if err := s.Settle(ctx, "r", t0, outcomes); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: s, Clock: outboxtest.NewClock(t0.Add(time.Minute)), PageSize: 3, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	// A page reads at most 20 rows oldest first, 40 newest first; no set is read whole.
	h.scan = scanLimits{rounds: 2, batch: 10, small: 0}

	rowRE := regexp.MustCompile(`<tr data-id="([^"]+)">`)
	nextRE := regexp.MustCompile(`href="(/events\?[^"]*)" id="next-page"`)
	for _, order := range []string{"", "&order=oldest"} {
		var got []string
		short := 0
		path := "/events?retrying=1" + order
		for pages := 0; path != ""; pages++ {
			if pages > 100 {
				t.Fatalf("still paging after %d pages", pages)
			}
			r := httptest.NewRequest(http.MethodGet, path, nil)
			r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1:8080"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s = %d", path, w.Code)
			}
			rows := rowRE.FindAllStringSubmatch(w.Body.String(), -1)
			for _, m := range rows {
				got = append(got, m[1])
			}
			path = ""
			if m := nextRE.FindStringSubmatch(w.Body.String()); m != nil {
				path = html.UnescapeString(m[1])
				if len(rows) < 3 {
					short++
				}
			}
		}
		want := slices.Clone(retrying)
		if order == "" {
			slices.Reverse(want)
		}
		if !slices.Equal(got, want) {
			t.Errorf("order %q: listed %v, want %v", order, got, want)
		}
		if short == 0 {
			t.Errorf("order %q: no page was cut short; the test does not reach the stop", order)
		}
	}
}

// TestDashboardNewestFirstReadsMatchOldestFirst: both ways of reading newest first (the
// windows of Seq downwards, and a small set read whole) list what reading oldest first
// does, in reverse, page by page, on dense and sparse sets with holes in the numbering.
func TestDashboardNewestFirstReadsMatchOldestFirst(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	var events []*outbox.Event
	for i := range 500 {
		typ := "dense"
		switch {
		case i%120 == 9:
			typ = "sparse"
		case i < 20:
			typ = "old"
		case i > 490:
			typ = "new"
		}
		events = append(events, outbox.NewEvent(typ, "e-"+strconv.Itoa(i), "u-"+strconv.Itoa(i%7)))
	}
	if err := s.Enqueue(ctx, t0, events...); err != nil {
		t.Fatal(err)
	}
	var gone []string
	for i := 100; i < 400; i += 2 {
		gone = append(gone, events[i].ID)
	}
	if _, err := s.Delete(ctx, gone...); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: s, Clock: outboxtest.NewClock(t0), Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	seqs := func(events []outbox.Event) []int64 {
		out := make([]int64, len(events))
		for i, e := range events {
			out[i] = e.Seq
		}
		return out
	}
	for _, query := range []string{"", "type=sparse", "type=old", "type=new", "user=u-3", "type=dense&user=u-5", "type=none"} {
		v, _ := url.ParseQuery(query)
		sel, err := h.selection(ctx, parseListQuery(v))
		if err != nil {
			t.Fatal(err)
		}
		limits := []int{1, 5}
		if query == "" || strings.HasPrefix(query, "user=") || strings.Contains(query, "&") {
			limits = []int{13, 50} // the larger sets
		}
		for _, limit := range limits {
			var want []int64
			for after := int64(0); ; {
				page, next, err := h.find(ctx, sel, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, seqs(page)...)
				if next == 0 {
					break
				}
				after = next
			}
			slices.Reverse(want)
			ways := map[string]func(before int64) ([]outbox.Event, int64, error){
				"windows": func(before int64) ([]outbox.Event, int64, error) { return h.findNewest(ctx, sel, before, limit) },
				"whole": func(before int64) ([]outbox.Event, int64, error) {
					page, next, done, err := h.newestOfAll(ctx, sel, before, limit)
					if err == nil && !done {
						t.Fatalf("%q: the set of %d was not read whole", query, len(want))
					}
					return page, next, err
				},
			}
			for name, read := range ways {
				var got []int64
				for before, pages := int64(0), 0; ; pages++ {
					if pages > 3000 {
						t.Fatalf("%s %q: still paging", name, query)
					}
					page, next, err := read(before)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > limit {
						t.Fatalf("%s %q: a page of %d over %d", name, query, len(page), limit)
					}
					got = append(got, seqs(page)...)
					if next == 0 {
						break
					}
					before = next
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s %q, %d a page: %d events, want %d in reverse", name, query, limit, len(got), len(want))
				}
			}
		}
	}
}
