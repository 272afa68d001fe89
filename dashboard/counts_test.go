package dashboard_test

import (
	"context"
	"html"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// allPages follows a list's "next page" links from path on and returns every row, and
// the match count of the first page.
func (f *fixture) allPages(path string) (rows []string, count int) {
	f.t.Helper()
	for page := 0; path != ""; page++ {
		if page > 500 {
			f.t.Fatalf("still paging after %d pages (at %s)", page, path)
		}
		r := f.get(path)
		if r.code != 200 {
			f.t.Fatalf("GET %s = %d: %.300s", path, r.code, r.body)
		}
		if page == 0 {
			count = matchCount(f.t, r.body)
		}
		rows = append(rows, listed(r.body)...)
		path = ""
		if m := regexp.MustCompile(`href="(/events\?[^"]*)" id="next-page"`).FindStringSubmatch(r.body); m != nil {
			path = html.UnescapeString(m[1])
		}
	}
	return rows, count
}

// TestDashboardCardsCountTheirLists: every figure of the overview that links to a list
// (the cards, and each cell of the by-type table) links to a list of exactly that many
// events, whose match count says so; with a paused type, whose stale event the stale
// card leaves out, and given-up events that the retrying card leaves out.
func TestDashboardCardsCountTheirLists(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{PageSize: 2})
		pauser, ok := f.store.(outbox.TypePauser)
		if !ok {
			t.Fatalf("%T does not pause types", f.store)
		}
		if err := pauser.PauseType(context.Background(), "user.renamed", now); err != nil { // pending[1], stale
			t.Fatal(err)
		}
		body := f.get("/").body
		cards := regexp.MustCompile(`<a class="card[^"]*" id="(count-[a-z-]+)" href="([^"]+)"><span class="n">([0-9]+)</span>`).FindAllStringSubmatch(body, -1)
		if len(cards) != 9 {
			t.Fatalf("found %d linked cards, want 9", len(cards))
		}
		want := map[string]int{"count-retrying": 1, "count-stale": 2, "count-given-up": 2, "count-total": 10}
		for _, c := range cards {
			n, _ := strconv.Atoi(c[3])
			if w, ok := want[c[1]]; ok && n != w {
				t.Errorf("card %s = %d, want %d", c[1], n, w)
			}
			rows, count := f.allPages(html.UnescapeString(c[2]))
			if len(rows) != n || count != n {
				t.Errorf("card %s = %d links to %s: %d rows, match count %d", c[1], n, c[2], len(rows), count)
			}
		}
		cells := regexp.MustCompile(`<td class="num"><a href="([^"]+)">([0-9]+)</a></td>`).FindAllStringSubmatch(body, -1)
		if len(cells) != 4*5 { // 4 types × 5 statuses
			t.Fatalf("found %d linked cells in the by-type table, want 20", len(cells))
		}
		for _, c := range cells {
			n, _ := strconv.Atoi(c[2])
			rows, count := f.allPages(html.UnescapeString(c[1]))
			if len(rows) != n || count != n {
				t.Errorf("by-type cell %d links to %s: %d rows, match count %d", n, c[1], len(rows), count)
			}
		}
	})
}

// TestDashboardTimeRangeListsOnlyItsEvents: an event written with a clock far from the
// others' sits among them by Seq; a time range around it does not list it.
func TestDashboardTimeRangeListsOnlyItsEvents(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		s := newStore(t)
		ctx := context.Background()
		var inside []string
		for i := range 30 {
			at := t0.Add(time.Duration(i) * time.Minute)
			switch i {
			case 12:
				at = t0.Add(-3 * time.Hour) // a relay whose clock was hours behind
			case 15:
				at = t0.Add(5 * time.Hour) // and one hours ahead
			}
			e := outbox.NewEvent("t", "e-"+strconv.Itoa(i), "u")
			if err := s.Enqueue(ctx, at, e); err != nil {
				t.Fatal(err)
			}
			if !at.Before(t0.Add(10*time.Minute)) && at.Before(t0.Add(20*time.Minute)) {
				inside = append(inside, e.ID)
			}
		}
		h, err := dashboard.New(dashboard.Config{Store: s, Clock: newClock(), Logger: outboxtest.Discard})
		if err != nil {
			t.Fatal(err)
		}
		f := &fixture{t: t, h: h}
		q := "from=2026-03-04T10:10&to=2026-03-04T10:20"
		r := f.get("/events?" + q)
		if got, want := listed(r.body), reversed(inside); !slices.Equal(got, want) {
			t.Fatalf("listed %d events, want the %d created inside the range, newest first", len(got), len(want))
		}
		if n := matchCount(t, r.body); n != len(inside) {
			t.Errorf("match count %d, want %d", n, len(inside))
		}
		for _, m := range regexp.MustCompile(`data-created="([^"]+)"`).FindAllStringSubmatch(r.body, -1) {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil || at.Before(t0.Add(10*time.Minute)) || !at.Before(t0.Add(20*time.Minute)) {
				t.Errorf("listed an event created at %s, outside the range", m[1])
			}
		}
		if got := listed(f.get("/events?order=oldest&" + q).body); !slices.Equal(got, inside) {
			t.Errorf("oldest first: listed %d events, want %d", len(got), len(inside))
		}
	})
}

// TestDashboardNewestFirstPagesThroughEveryEvent: on an outbox of hundreds of events
// with holes in the numbering, and sets from dense to sparse, paging newest first lists
// exactly what paging oldest first does, reversed, each page within the page size.
func TestDashboardNewestFirstPagesThroughEveryEvent(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	var events []*outbox.Event
	for i := range 800 {
		typ := "bulk.dense"
		switch {
		case i%200 == 7:
			typ = "bulk.sparse"
		case i < 20:
			typ = "bulk.old" // only at the start: the scan must reach back
		}
		events = append(events, outbox.NewEvent(typ, "e-"+strconv.Itoa(i), "u-"+strconv.Itoa(i%3)))
	}
	if err := s.Enqueue(ctx, t0, events...); err != nil {
		t.Fatal(err)
	}
	var gone []string
	for i := 100; i < 600; i += 3 { // holes
		gone = append(gone, events[i].ID)
	}
	if _, err := s.Delete(ctx, gone...); err != nil {
		t.Fatal(err)
	}
	h, err := dashboard.New(dashboard.Config{Store: s, Clock: newClock(), PageSize: 40, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, h: h}
	for _, q := range []string{"", "type=bulk.sparse", "type=bulk.old", "user=u-1", "type=bulk.dense&user=u-2", "type=none"} {
		oldest, _ := f.allPages("/events?order=oldest&" + q)
		newest, count := f.allPages("/events?" + q)
		if !slices.Equal(newest, reversed(oldest)) {
			t.Errorf("%q: newest first lists %d events, oldest first %d, not the same in reverse", q, len(newest), len(oldest))
		}
		if count != len(oldest) && !(q == "" && count > len(oldest)) {
			t.Errorf("%q: match count %d, want %d", q, count, len(oldest))
		}
	}
}

// TestDashboardRetryingAmongManyGivenUpPagesOn: the retrying events among hundreds
// given up (which the store's filter of failed events returns too), newest and oldest
// first, each once; and the given-up ones counted.
func TestDashboardRetryingAmongManyGivenUpPagesOn(t *testing.T) {
	t.Parallel()
	s := sqlitetest.NewStore(t)
	ctx := context.Background()
	var events []*outbox.Event
	for i := range 400 {
		events = append(events, outbox.NewEvent("charge", "c-"+strconv.Itoa(i), "u"))
	}
	if err := s.Enqueue(ctx, t0, events...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, outbox.ClaimParams{Owner: "r", Now: t0, LeaseUntil: t0.Add(time.Minute), Limit: 2000}); err != nil {
		t.Fatal(err)
	}
	var outcomes []outbox.Outcome
	var retrying []string
	for i, e := range events {
		o := outbox.Outcome{ID: e.ID, Result: outbox.Failed, Error: "500"}
		if i == 3 || i == 200 || i == 399 {
			o.NextAttemptAt = t0.Add(time.Hour)
			retrying = append(retrying, e.ID)
		}
		outcomes = append(outcomes, o)
	}
	if err := s.Settle(ctx, "r", t0, outcomes); err != nil {
		t.Fatal(err)
	}
	h, err := dashboard.New(dashboard.Config{Store: s, Clock: newClock(), PageSize: 2, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, h: h}
	newest, count := f.allPages("/events?retrying=1")
	if !slices.Equal(newest, reversed(retrying)) || count != 3 {
		t.Errorf("retrying, newest first: %d rows, match count %d; want the 3", len(newest), count)
	}
	oldest, _ := f.allPages("/events?retrying=1&order=oldest")
	if !slices.Equal(oldest, retrying) {
		t.Errorf("retrying, oldest first: %d rows, want the 3", len(oldest))
	}
	if n := matchCount(t, f.get("/events?"+url.Values{"given_up": {"1"}}.Encode()).body); n != 397 {
		t.Errorf("given up: match count %d, want 397", n)
	}
}
