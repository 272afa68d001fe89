package dashboard_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// tab is a Chromium tab a test drives.
type tab struct {
	t   *testing.T
	ctx context.Context
	dir string // where screenshots go
}

func newTab(t *testing.T, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	return &tab{t: t, ctx: newBrowser(t, extra...), dir: artifacts(t)}
}

// open navigates to u and returns the HTTP status of the page.
func (b *tab) open(u string) int64 {
	b.t.Helper()
	res, err := chromedp.RunResponse(b.ctx, chromedp.Navigate(u))
	if err != nil {
		b.t.Fatalf("open %s: %v", u, err)
	}
	return res.Status
}

// click clicks an element that navigates, and returns the new page's HTTP status.
func (b *tab) click(what, sel string) int64 {
	b.t.Helper()
	res, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return res.Status
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text is what the browser shows of sel (innerText: as rendered, not as written).
func (b *tab) text(sel string) string {
	b.t.Helper()
	return evalIn[string](b, `(function (e) { return e ? e.innerText.trim() : "(missing: " + `+strconv.Quote(sel)+` + ")"; })(document.querySelector(`+strconv.Quote(sel)+`))`)
}

func evalIn[T any](b *tab, js string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		b.t.Fatalf("evaluate %.80s: %v", js, err)
	}
	return v
}

// rows are the IDs of the list's rows, in order.
func (b *tab) rows() []string {
	b.t.Helper()
	return evalIn[[]string](b, `Array.from(document.querySelectorAll("#events tbody tr")).map(r => r.dataset.id)`)
}

// matchCount is the list's match count as shown.
func (b *tab) matchCount() int {
	b.t.Helper()
	s := strings.ReplaceAll(b.text("#match-count"), ",", "")
	n, err := strconv.Atoi(s)
	if err != nil {
		b.t.Fatalf("match count %q: %v", s, err)
	}
	return n
}

// fits checks that the page is no wider than the viewport: nothing stretches it.
func (b *tab) fits(what string) {
	b.t.Helper()
	w := evalIn[[]int](b, `[document.documentElement.scrollWidth, window.innerWidth]`)
	if w[0] > w[1] {
		b.t.Errorf("%s is %d px wide in a viewport of %d", what, w[0], w[1])
	}
}

func (b *tab) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// TestBrowserDashboardRefusesARebindingPage: Chromium resolves a foreign name to
// 127.0.0.1, as a DNS-rebinding attack makes it; the page it opens under that name gets
// the refusal (no dashboard, no form token), and its same-origin POST of a discard is
// refused too, while the dashboard under 127.0.0.1 works.
func TestBrowserDashboardRefusesARebindingPage(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	o := fillOutbox(t, store)
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: newClock(), Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	b := newTab(t, chromedp.Flag("host-resolver-rules", "MAP rebind.attacker.example 127.0.0.1"), chromedp.Flag("no-proxy-server", true))

	// The real page, for its form token (which the attacker's page could not read).
	id := o.givenUp[0]
	if st := b.open(srv.URL + "/events/" + id); st != 200 {
		t.Fatalf("GET under 127.0.0.1 = %d", st)
	}
	csrf := evalIn[string](b, `document.querySelector("input[name=csrf]").value`)

	rebound := "http://rebind.attacker.example:" + u.Port()
	if st := b.open(rebound + "/events/" + id); st != 421 {
		t.Fatalf("GET under the rebound name = %d, want 421", st)
	}
	if got := b.text("body"); !strings.Contains(got, "answers only to a loopback host name") {
		t.Errorf("the refusal reads %q", got)
	}
	if evalIn[bool](b, `document.querySelector("input[name=csrf]") !== null || document.body.innerText.includes(`+strconv.Quote(csrf)+`)`) {
		t.Error("the rebound page can read the form token")
	}
	b.screenshot("dashboard-rebinding-refused.png")
	status := evalIn[int](b, `fetch("/actions/discard", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "confirm=yes&csrf=`+csrf+`&ids=`+id+`"}).then(r => r.status)`, chromedp.EvalAwaitPromise)
	if status != 421 {
		t.Errorf("the rebound page's POST of a discard = %d, want 421", status)
	}
	if e, err := store.Get(context.Background(), id); err != nil || !e.GivenUp() {
		t.Fatalf("the given-up event after the rebound POST: %v, %v", e.Status, err)
	}
}

// TestBrowserDashboardCardsMatchTheirLists: each card of the overview, clicked, shows a
// list whose match count and rows equal the card (retrying without the given up, stale
// without the paused type's); the given-up alert links to the given-up list; the time
// range keeps to its range, newest first, with its count.
func TestBrowserDashboardCardsMatchTheirLists(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	fillOutbox(t, store)
	ctx := context.Background()
	if err := store.PauseType(ctx, "user.renamed", now); err != nil {
		t.Fatal(err)
	}
	// Events a minute apart from 10:01, one of them written by a clock three hours ahead.
	var inRange []string
	from, to := t0.Add(2*time.Minute), t0.Add(5*time.Minute)
	for i := 1; i <= 6; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		if i == 3 {
			at = t0.Add(3 * time.Hour)
		}
		e := outbox.NewEvent("clock.tick", "tick-"+strconv.Itoa(i), "dana")
		if err := store.Enqueue(ctx, at, e); err != nil {
			t.Fatal(err)
		}
		if !at.Before(from) && at.Before(to) {
			inRange = append(inRange, e.ID)
		}
	}
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: newClock(), RefreshInterval: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	b := newTab(t)

	b.open(srv.URL + "/")
	cards := evalIn[[]string](b, `Array.from(document.querySelectorAll("#live a.card")).map(a => a.id)`)
	if len(cards) != 9 {
		t.Fatalf("the overview links %d cards, want 9: %v", len(cards), cards)
	}
	for _, id := range cards {
		b.open(srv.URL + "/")
		n, err := strconv.Atoi(b.text("#" + id + " .n"))
		if err != nil {
			t.Fatal(err)
		}
		if st := b.click("click "+id, "#"+id); st != 200 {
			t.Fatalf("%s: HTTP %d", id, st)
		}
		if got, rows := b.matchCount(), len(b.rows()); got != n || rows != n {
			t.Errorf("card %s says %d; its list says %d and shows %d rows (%s)", id, n, got, rows, evalIn[string](b, `location.search`))
		}
	}
	b.open(srv.URL + "/")
	givenUp := b.text("#count-given-up .n")
	if st := b.click("follow the given-up alert", `li[data-rule="given_up"] a`); st != 200 {
		t.Fatalf("the given-up alert's link: HTTP %d", st)
	}
	if got := strconv.Itoa(b.matchCount()); got != givenUp || evalIn[string](b, `location.search`) != "?given_up=1" {
		t.Errorf("the given-up alert leads to %s with %s events, want the given-up list of %s", evalIn[string](b, `location.search`), got, givenUp)
	}

	// The time range, from the filter form.
	b.open(srv.URL + "/events")
	b.do("set the range", chromedp.SetValue(chromedp.ID("f-from"), from.Format("2006-01-02T15:04")),
		chromedp.SetValue(chromedp.ID("f-to"), to.Format("2006-01-02T15:04")))
	if st := b.click("filter by time", "#f-apply"); st != 200 {
		t.Fatalf("filter: HTTP %d", st)
	}
	if got, want := b.rows(), reversed(inRange); !slices.Equal(got, want) {
		t.Errorf("the range lists %v, want %v (newest first)", got, want)
	}
	if n := b.matchCount(); n != len(inRange) {
		t.Errorf("the range's match count is %d, want %d", n, len(inRange))
	}
	for _, s := range evalIn[[]string](b, `Array.from(document.querySelectorAll("#events td.time")).map(td => td.dataset.created)`) {
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || at.Before(from) || !at.Before(to) {
			t.Errorf("the range lists an event created at %s", s)
		}
	}
	b.screenshot("dashboard-events-range.png")
}

// TestBrowserDashboardLongValuesWrapAndHiddenCharactersShow: a 255-byte type, entity,
// user, key and error stretch no page beyond the viewport, the by-type table included;
// a right-to-left override shows as its code; an event in flight shows its lease, not
// a next attempt in the past.
func TestBrowserDashboardLongValuesWrapAndHiddenCharactersShow(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	o := fillOutbox(t, store)
	ctx := context.Background()
	long := func(prefix string) string { return prefix + strings.Repeat("x", 255-len(prefix)) }
	le := outbox.NewEvent(long("type."), long("entity-"), long("user-"))
	le.OrderingKey = long("key-")
	if err := store.Enqueue(ctx, now, le); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Claim(ctx, outbox.ClaimParams{Owner: "relay-9", Now: now, LeaseUntil: now.Add(time.Second), Limit: 1, Types: []string{le.Type}}); err != nil {
		t.Fatal(err)
	}
	if err := store.Settle(ctx, "relay-9", now, []outbox.Outcome{{ID: le.ID, Result: outbox.Failed, Error: long("422 ")}}); err != nil {
		t.Fatal(err)
	}
	spoof := outbox.NewEvent("invoice.sent", "invoice-\u202Efdp.exe", "mallory")
	if err := store.Enqueue(ctx, now, spoof); err != nil {
		t.Fatal(err)
	}
	inFlight := addInFlight(t, store, "refund.issued", "refund-1")
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: newClock(), RefreshInterval: time.Hour, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	b := newTab(t)

	for _, width := range []int64{1280, 800} {
		b.do("resize", chromedp.EmulateViewport(width, 900))
		for _, path := range []string{"/", "/events", "/events?given_up=1", "/events/" + le.ID} {
			if st := b.open(srv.URL + path); st != 200 {
				t.Fatalf("GET %s = %d", path, st)
			}
			b.fits(path + " at " + strconv.FormatInt(width, 10) + " px")
		}
		b.open(srv.URL + "/")
		if r := evalIn[[]float64](b, `(r => [r.right, window.innerWidth])(document.getElementById("by-type").getBoundingClientRect())`); r[0] > r[1] {
			t.Errorf("at %d px the by-type table reaches %.0f px, past the viewport's %.0f", width, r[0], r[1])
		}
		b.open(srv.URL + "/events?given_up=1")
		if st := b.click("ask to discard the given up", "#discard-matching"); st != 200 {
			t.Fatalf("confirmation: HTTP %d", st)
		}
		b.fits("the confirmation at " + strconv.FormatInt(width, 10) + " px")
	}
	b.do("resize", chromedp.EmulateViewport(1280, 900))
	b.open(srv.URL + "/events/" + le.ID)
	b.screenshot("dashboard-event-long.png")

	// The override, shown as its code.
	b.open(srv.URL + "/events?type=invoice.sent")
	cell := evalIn[string](b, `document.querySelector('#events tr[data-id="`+spoof.ID+`"] td:nth-child(4)').innerText`)
	if cell != `invoice-\u202Efdp.exe` {
		t.Errorf("the entity shows as %q, want invoice-\\u202Efdp.exe", cell)
	}
	b.open(srv.URL + "/events/" + spoof.ID)
	if got := b.text("#field-entity"); got != `invoice-\u202Efdp.exe` || strings.ContainsRune(got, '\u202E') {
		t.Errorf("the event page shows the entity as %q", got)
	}
	if evalIn[int](b, `document.querySelectorAll("#field-entity mark.ctl").length`) != 1 {
		t.Error("the override is not marked")
	}

	// In flight: its lease, and no next attempt in the past.
	b.open(srv.URL + "/events/" + inFlight)
	if got := b.text("#field-next"); !strings.HasPrefix(got, "none while in flight") || strings.Contains(got, "ago") {
		t.Errorf("next attempt of an event in flight reads %q", got)
	}
	if got := b.text("#field-lease"); !strings.Contains(got, "held by relay-2") || !strings.Contains(got, "live: being delivered") {
		t.Errorf("the lease of an event in flight reads %q", got)
	}
	b.screenshot("dashboard-event-in-flight.png")
	_ = o
}

// TestBrowserDashboardDiscardUnderALeaseNeedsForce: from the page of an event a relay is
// delivering, a discard confirmed as usual is refused with the reason; with the force
// box ticked it goes. A bulk confirmation shows each event's type, entity and status.
func TestBrowserDashboardDiscardUnderALeaseNeedsForce(t *testing.T) {
	t.Parallel()
	store := sqlitetest.NewStore(t)
	o := fillOutbox(t, store)
	held := addInFlight(t, store, "invoice.sent", "invoice-7")
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: newClock(), Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	b := newTab(t)
	exists := func() bool {
		_, err := store.Get(context.Background(), held)
		return err == nil
	}

	b.open(srv.URL + "/events/" + held)
	if got := b.text("#in-flight"); !strings.Contains(got, "Being delivered: relay-2 holds its lease") {
		t.Errorf("the event page warns %q", got)
	}
	b.click("ask to discard", "#discard")
	if got := b.text("#held"); !strings.Contains(got, "1 of these is being delivered under a live lease") {
		t.Errorf("the confirmation warns %q", got)
	}
	row := b.text(`#confirm-events tr[data-id="` + held + `"]`)
	for _, want := range []string{"invoice.sent", "invoice-7", "erin", "processing"} {
		if !strings.Contains(row, want) {
			t.Errorf("the confirmation's row %q lacks %q", row, want)
		}
	}
	b.screenshot("dashboard-confirm-held.png")
	if st := b.click("confirm without force", "#confirm"); st != 409 {
		t.Fatalf("confirmed without force: HTTP %d, want 409", st)
	}
	if got := b.text("#error"); !strings.Contains(got, "is being delivered by relay-2") {
		t.Errorf("the refusal reads %q", got)
	}
	if !exists() {
		t.Fatal("discarded without force")
	}

	b.open(srv.URL + "/events/" + held)
	b.click("ask to discard", "#discard")
	b.do("tick force", chromedp.Click(chromedp.ID("force")))
	if st := b.click("confirm with force", "#confirm"); st != 200 {
		t.Fatalf("confirmed with force: HTTP %d", st)
	}
	if got := b.text("#notice"); got != "Discarded 1 of 1 event(s)." {
		t.Errorf("notice = %q", got)
	}
	if exists() {
		t.Fatal("the forced discard left the event")
	}

	// A bulk confirmation: each event with its type, entity and status.
	b.open(srv.URL + "/events?status=failed")
	b.click("ask to retry the failed", "#retry-matching")
	got := evalIn[[][]string](b, `Array.from(document.querySelectorAll("#confirm-events tbody tr[data-id]")).map(r =>
		[r.dataset.id, r.cells[1].innerText, r.cells[2].innerText, r.cells[4].innerText])`)
	want := [][]string{
		{o.retrying, "order.shipped", "order-5", "retrying"},
		{o.givenUp[0], "payment.charge", "order-7", "given up"},
		{o.givenUp[1], "payment.charge", "order-8", "given up"},
	}
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Errorf("the confirmation shows %v, want %v", got, want)
	}
	b.screenshot("dashboard-confirm-bulk.png")
}
