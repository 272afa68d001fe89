package dashboard_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
)

// TestDashboardAnswersOnlyLoopbackHostsWithoutAToken: a page of another site whose name
// resolves to 127.0.0.1 (DNS rebinding) is same-origin with whatever it reaches; the
// dashboard without a token answers it 421, so the page can neither read the form token
// nor post an action, even with the right token and a matching Origin.
func TestDashboardAnswersOnlyLoopbackHostsWithoutAToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	id := f.o.givenUp[0]
	for _, host := range []string{"localhost", "localhost:8080", "LocalHost:1", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:80", "[::1]", "[::1]:8080"} {
		r := httptest.NewRequest(http.MethodGet, "/events/"+id, nil)
		r.Host = host
		if got := f.do(r); got.code != http.StatusOK || !strings.Contains(got.body, `name="csrf"`) {
			t.Errorf("Host %q: GET = %d, want 200 with the page", host, got.code)
		}
	}
	for _, host := range []string{"rebind.attacker.example:8080", "rebind.attacker.example", "localhost.attacker.example:8080",
		"127.0.0.1.attacker.example", "attacker.example:8080", "10.0.0.7:8080", ""} {
		r := httptest.NewRequest(http.MethodGet, "/events/"+id, nil)
		r.Host = host
		got := f.do(r)
		if got.code != http.StatusMisdirectedRequest || !strings.Contains(got.body, "answers only to a loopback host name") {
			t.Errorf("Host %q: GET = %d, want 421 saying why: %.200s", host, got.code, got.body)
		}
		if strings.Contains(got.body, f.csrf) {
			t.Errorf("Host %q: the refusal carries the form token", host)
		}

		// The action a rebinding page would post, with the form token it could not read
		// and the Origin a browser sends from it (same-origin for the browser).
		form := url.Values{"csrf": {f.csrf}, "ids": {id}, "confirm": {"yes"}, "back": {"/events"}}
		r = httptest.NewRequest(http.MethodPost, "/actions/discard", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Host = host
		r.Header.Set("Origin", "http://"+host)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		if got := f.do(r); got.code != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: POST discard = %d, want 421", host, got.code)
		}
		if e, ok := f.status(id); !ok || !e.GivenUp() {
			t.Fatalf("Host %q: the given-up event was discarded", host)
		}
	}
	if !regexp.MustCompile(`level=WARN msg="request refused: not a loopback host name" .*host=rebind.attacker.example:8080 .*path=/actions/discard`).MatchString(f.logs.String()) {
		t.Errorf("the refusal is not logged: %s", f.logs)
	}

	// With a token the name does not matter: the browser of a rebinding page does not
	// have the token.
	tf := newFixture(t, dashboard.Config{Token: "s3cret"})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = "outbox.internal.example:8080"
	r.Header.Set("Authorization", "Bearer s3cret")
	if got := tf.do(r); got.code != http.StatusOK {
		t.Errorf("token, another host name: GET = %d, want 200", got.code)
	}
}

// TestDashboardRefusesToDiscardUnderALiveLeaseUnlessForced: as `outbox discard` does,
// the dashboard leaves an event a relay is delivering, says so on the confirmation and
// in a 409, and discards it only when the form forces it.
func TestDashboardRefusesToDiscardUnderALiveLeaseUnlessForced(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newStore func(t *testing.T) outbox.Store) {
		f := newFixtureOn(t, newStore(t), dashboard.Config{})
		held := addInFlight(t, f.store, "invoice.sent", "invoice-1")

		page := f.get("/events/" + held).body
		for _, want := range []string{`id="in-flight"`, "Being delivered: <code>relay-2</code>", `id="discard"`} {
			if !strings.Contains(page, want) {
				t.Errorf("the event page lacks %q", want)
			}
		}
		if strings.Contains(page, `id="retry"`) {
			t.Error("the event page offers a retry of an event being delivered")
		}

		form := url.Values{"csrf": {f.csrf}, "ids": {held}, "back": {"/events/" + held}}
		confirm := f.post("/actions/discard", form)
		for _, want := range []string{`id="held"`, "1 of these is being delivered under a live lease", `name="force" value="yes"`} {
			if !strings.Contains(confirm.body, want) {
				t.Errorf("the confirmation lacks %q", want)
			}
		}

		form.Set("confirm", "yes")
		r := f.post("/actions/discard", form)
		if r.code != http.StatusConflict || !strings.Contains(r.body, "is being delivered by relay-2") {
			t.Fatalf("confirmed without force: %d, want 409 saying it is being delivered: %.300s", r.code, r.body)
		}
		if _, ok := f.status(held); !ok {
			t.Fatal("the event under a live lease was discarded without force")
		}
		if !strings.Contains(f.logs.String(), `level=WARN msg="event not discarded: being delivered"`) {
			t.Errorf("the refusal is not logged: %s", f.logs)
		}

		// A set with one held event and one given up: the given-up one goes, the held one stays.
		mixed := url.Values{"csrf": {f.csrf}, "ids": {held, f.o.givenUp[1]}, "confirm": {"yes"}, "back": {"/events"}}
		r = f.post("/actions/discard", mixed)
		if loc := r.header.Get("Location"); r.code != http.StatusSeeOther || !strings.Contains(loc, "n=1&of=2&held=1") {
			t.Fatalf("mixed set: %d to %q, want 303 with n=1&of=2&held=1", r.code, loc)
		}
		if _, ok := f.status(f.o.givenUp[1]); ok {
			t.Error("the given-up event of the mixed set was not discarded")
		}
		if _, ok := f.status(held); !ok {
			t.Fatal("the held event of the mixed set was discarded without force")
		}
		if got := f.get(r.header.Get("Location")).body; !strings.Contains(got, "1 being delivered under a live lease were left alone") {
			t.Error("the notice does not say the held event was left alone")
		}

		// Forced, knowingly.
		form.Set("force", "yes")
		r = f.post("/actions/discard", form)
		if r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/events?done=discard&n=1&of=1") {
			t.Fatalf("forced: %d to %q, want 303 to the list", r.code, r.header.Get("Location"))
		}
		if _, ok := f.status(held); ok {
			t.Fatal("the forced discard left the event")
		}
		logs := f.logs.String()
		if !strings.Contains(logs, `level=WARN msg="event discarded while being delivered (forced)"`) || !strings.Contains(logs, "forced=true") {
			t.Errorf("the forced discard is not logged as such: %s", logs)
		}
	})
}

// TestDashboardLogsEveryEventOfAnActionInFull: each event an action reaches is logged
// with what `outbox discard` logs (ID, type, entity, user, status, attempts, ordering
// key, last error), however many there are, and the action once with its counts.
func TestDashboardLogsEveryEventOfAnActionInFull(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	ctx := t.Context()
	// 30 more given-up events: past the 20 IDs the log used to keep.
	var ids []string
	for i := range 30 {
		e := outbox.NewEvent("refund.issued", "refund-"+itoa(int64(i)), "frank")
		e.OrderingKey = "refund-key-" + itoa(int64(i))
		if err := f.store.Enqueue(ctx, now, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	claimed, err := f.store.Claim(ctx, outbox.ClaimParams{Owner: "relay-3", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 100, Types: []string{"refund.issued"}})
	if err != nil || len(claimed) != 30 {
		t.Fatalf("claimed %d, %v", len(claimed), err)
	}
	var outcomes []outbox.Outcome
	for _, id := range ids {
		outcomes = append(outcomes, outbox.Outcome{ID: id, Result: outbox.Failed, Error: "422 refund refused"})
	}
	if err := f.store.Settle(ctx, "relay-3", now, outcomes); err != nil {
		t.Fatal(err)
	}

	// Retry five of them by ID, then discard the rest by filter.
	r := f.post("/actions/retry", url.Values{"csrf": {f.csrf}, "ids": ids[:5], "confirm": {"yes"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("retry = %d: %.300s", r.code, r.body)
	}
	r = f.post("/actions/discard", url.Values{"csrf": {f.csrf}, "query": {"type=refund.issued&given_up=1"}})
	confirm := url.Values{"csrf": {f.csrf}, "confirm": {"yes"}}
	for _, m := range regexp.MustCompile(`name="ids" value="([^"]+)"`).FindAllStringSubmatch(r.body, -1) {
		confirm.Add("ids", m[1])
	}
	if len(confirm["ids"]) != 25 {
		t.Fatalf("the confirmation carries %d IDs, want 25", len(confirm["ids"]))
	}
	if r := f.post("/actions/discard", confirm); r.code != http.StatusSeeOther {
		t.Fatalf("discard = %d: %.300s", r.code, r.body)
	}

	logs := f.logs.String()
	for i, id := range ids {
		msg := `msg="event discarded"`
		if i < 5 {
			msg = `msg="event retried"`
		}
		line := regexp.MustCompile(`(?m)^.*` + regexp.QuoteMeta(msg) + `.*event_id=` + id + `.*$`).FindString(logs)
		if line == "" {
			t.Errorf("no %s line for %s", msg, id)
			continue
		}
		for _, want := range []string{"who=local", "type=refund.issued", "entity_id=refund-" + itoa(int64(i)) + " ", "user_id=frank",
			`status="given up"`, "attempts=1", "ordering_key=refund-key-" + itoa(int64(i)) + " ", `last_error="422 refund refused"`} {
			if !strings.Contains(line, want) {
				t.Errorf("the log line of %s lacks %q: %s", id, want, line)
			}
		}
	}
	for _, want := range []string{"msg=action component=outbox.dashboard action=retry who=local", "requested=5 retried=5",
		"msg=action component=outbox.dashboard action=discard", "requested=25 discarded=25"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the action lines lack %q", want)
		}
	}
}

// TestDashboardConfirmationShowsEachEvent: a bulk confirmation lists each event's type,
// entity, user and status, not only its ID.
func TestDashboardConfirmationShowsEachEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	r := f.post("/actions/retry", url.Values{"csrf": {f.csrf}, "query": {"status=failed"}})
	if r.code != http.StatusOK {
		t.Fatalf("confirmation = %d: %.300s", r.code, r.body)
	}
	rows := regexp.MustCompile(`(?s)<tr data-id="([^"]+)">(.*?)</tr>`).FindAllStringSubmatch(r.body, -1)
	want := map[string][]string{
		f.o.retrying:   {"order.shipped", "order-5", "alice", ">retrying<", "connection refused"},
		f.o.givenUp[0]: {"payment.charge", "order-7", "alice", ">given up<"},
		f.o.givenUp[1]: {"payment.charge", "order-8", "bob", ">given up<", "400 bad request"},
	}
	if len(rows) != len(want) {
		t.Fatalf("the confirmation lists %d events, want %d", len(rows), len(want))
	}
	for _, row := range rows {
		for _, s := range want[row[1]] {
			if !strings.Contains(row[2], s) {
				t.Errorf("the row of %s lacks %q: %s", row[1], s, row[2])
			}
		}
	}
	if !strings.Contains(r.body, `<p id="by-status">1 retrying, 2 given up.</p>`) {
		t.Errorf("the confirmation does not sum up the statuses: %.2000s", r.body)
	}
}

// TestDashboardShowsAnInFlightEventsLease: an event being delivered has no "next
// attempt" in the past; the page shows its lease instead.
func TestDashboardShowsAnInFlightEventsLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	id := addInFlight(t, f.store, "invoice.sent", "invoice-2")
	body := f.get("/events/" + id).body
	next := regexp.MustCompile(`(?s)<dd id="field-next">(.*?)</dd>`).FindStringSubmatch(body)
	if next == nil || !strings.Contains(next[1], "none while in flight: attempt 1 holds a lease until 2026-03-04 10:11:00.000") ||
		!strings.Contains(next[1], "in 1m0s") || strings.Contains(next[1], " ago") {
		t.Errorf("next attempt of an event in flight shows %q", next)
	}
	if !strings.Contains(body, "live: being delivered") {
		t.Error("the lease is not shown as live")
	}
	stuck := regexp.MustCompile(`(?s)<dd id="field-next">(.*?)</dd>`).FindStringSubmatch(f.get("/events/" + f.o.stuck).body)
	if stuck == nil || !strings.Contains(stuck[1], "due now: its lease expired") {
		t.Errorf("next attempt of a stuck event shows %q", stuck)
	}
}

// TestDashboardShowsInvisibleCharactersVisibly: a right-to-left override (and the other
// format and control characters) in any value is shown as its code, marked, never
// applied.
func TestDashboardShowsInvisibleCharactersVisibly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	e := outbox.NewEvent("order.\u2066created", "invoice-\u202Efdp.exe", "mallory\u200B")
	e.OrderingKey = "key-\u202E1"
	e.Metadata = map[string]string{"src\u202E": "v\u202Ealue"}
	e.Payload = []byte(`{"name":"a` + "\u202E" + `b"}`)
	if err := f.store.Enqueue(t.Context(), now, e); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/events/" + e.ID, "/events?user=" + url.QueryEscape("mallory\u200B"), "/"} {
		body := f.get(path).body
		// The filter form keeps what the operator typed, to filter by it again; the
		// values shown are the rest.
		if i := strings.Index(body, `<form class="filters"`); i >= 0 {
			body = body[:i] + body[i+strings.Index(body[i:], "</form>"):]
		}
		if strings.ContainsAny(body, "\u202E\u2066\u200B") {
			t.Errorf("%s holds a bidirectional or invisible character as is", path)
		}
		if !strings.Contains(body, `<mark class="ctl" title="invisible character U+2066, shown instead of applied">\u2066</mark>`) {
			t.Errorf("%s does not mark U+2066 in the type", path)
		}
	}
	body := f.get("/events/" + e.ID).body
	for _, want := range []string{
		`invoice-<mark class="ctl" title="invisible character U+202E, shown instead of applied">\u202E</mark>fdp.exe`,
		`mallory<mark class="ctl" title="invisible character U+200B, shown instead of applied">\u200B</mark>`,
		`key-<mark class="ctl"`, `src<mark class="ctl"`, `v<mark class="ctl"`, `a<mark class="ctl"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the event page lacks %q", want)
		}
	}
	r := f.post("/actions/discard", url.Values{"csrf": {f.csrf}, "ids": {e.ID}})
	if strings.Contains(r.body, "\u202E") || !strings.Contains(r.body, `invoice-<mark class="ctl"`) {
		t.Error("the confirmation shows the entity's override as is")
	}
}

// TestDashboardAlertsLinkToTheirLists: each alert links to the list of its events, and
// names no CLI command.
func TestDashboardAlertsLinkToTheirLists(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dashboard.Config{})
	body := f.get("/").body
	for rule, href := range map[string]string{
		"given_up": `href="/events?given_up=1"`, "stuck": `href="/events?stuck=1"`, "stale": `href="/events?stale=1"`,
		"failure_rate": `href="/events?retrying=1"`,
	} {
		li := regexp.MustCompile(`(?s)<li data-rule="` + rule + `">(.*?)</li>`).FindStringSubmatch(body)
		if li == nil || !strings.Contains(li[1], href) {
			t.Errorf("alert %s does not link to %s: %q", rule, href, li)
		}
	}
	if strings.Contains(body, "outbox ls") {
		t.Error("an alert still names a CLI command")
	}
}
