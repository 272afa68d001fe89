package dashboard

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
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
	h.scan = scanLimits{rounds: 2, batch: 10} // a page reads at most 20 rows oldest first, 40 newest first

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
