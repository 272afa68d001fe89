package dashboard_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/dashboard"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

const chromiumPath = "/usr/bin/chromium"

// newBrowser starts Debian's Chromium, headless, with a profile of its own and any
// extra flags; it is stopped when the test ends.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no browser at %s, and CI is set: .ci/run installs it (apt-get install -y chromium): %v", chromiumPath, err)
		}
		t.Skipf("no browser at %s (apt-get install -y chromium; .ci/run installs it): %v", chromiumPath, err)
	}
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// artifacts is where the browser test writes its screenshots: OUTBOX_TEST_ARTIFACTS,
// or a temporary directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("OUTBOX_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots go to %s (set OUTBOX_TEST_ARTIFACTS to keep them)", dir)
	return dir
}

// TestBrowser drives the dashboard in Chromium on an SQLite outbox in every state: the overview's
// counts, the given-up filter, a retry from the event's page that a running relay then
// delivers, the overview refreshing itself, and no event content ever running as script.
func TestBrowser(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t)
	dir := artifacts(t)
	store := sqlitetest.NewStore(t)
	o := fillOutbox(t, store)
	clock := newClock()
	h, err := dashboard.New(dashboard.Config{Store: store, Clock: clock, RefreshInterval: 200 * time.Millisecond, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h) // on 127.0.0.1: no token needed
	defer srv.Close()

	// A dialog would mean an event's content ran as script: count it, and close it so
	// that the page goes on.
	var dialogs atomic.Int32
	opened := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range opened {
			if err != nil {
				return
			}
			dialogs.Add(1)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}
	}()
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	// liveTexts reads the overview's live part in one script run. The page swaps that
	// part every RefreshInterval, so reading it node by node can find a node that was
	// replaced between finding it and reading it.
	liveTexts := func(sels ...string) map[string]string {
		t.Helper()
		list, err := json.Marshal(sels)
		if err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries(`+string(list)+
			`.map(s => [s, document.querySelector(s) ? document.querySelector(s).textContent.trim() : "(missing)"]))`))
		if err != nil {
			t.Fatalf("read the overview: %v", err)
		}
		return got
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// click clicks an element that navigates, and waits for the new page.
	click := func(what, sel string) {
		t.Helper()
		res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.Status != 200 {
			t.Fatalf("%s: HTTP %d", what, res.Status)
		}
	}

	// The overview.
	do("open the overview", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("health")))
	wantOverview := map[string]string{
		"#count-pending .n": "3", "#count-processing .n": "1", "#count-completed .n": "3", "#count-retrying .n": "1",
		"#count-given-up .n": "2", "#count-stale .n": "3", "#count-blocked .n": "1", "#count-stuck .n": "1",
		"#count-total .n": "10", "#window-completed": "3", "#window-failed": "3",
		"#health h2": "Unhealthy: 4 alert(s)", // stuck, stale, failure rate, given up
	}
	overview := liveTexts(slices.Collect(maps.Keys(wantOverview))...)
	for sel, want := range wantOverview {
		if got := overview[sel]; got != want {
			t.Errorf("overview %s = %q, want %q", sel, got, want)
		}
	}
	screenshot("dashboard-overview.png")

	// Filter to the given-up events with the form.
	do("open the events", chromedp.Navigate(srv.URL+"/events"), chromedp.WaitVisible(chromedp.ID("filters")),
		chromedp.Click(chromedp.ID("f-given-up")))
	click("filter", "#f-apply")
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#events tbody tr")).map(r => r.dataset.id)`))
	if err != nil {
		t.Fatal(err)
	}
	if want := reversed(o.givenUp); !slices.Equal(rows, want) { // newest first
		t.Fatalf("given-up filter lists %v, want %v", rows, want)
	}
	screenshot("dashboard-events.png")

	// A hostile payload is shown as text, and runs nothing.
	do("open the hostile event", chromedp.Navigate(srv.URL+"/events/"+o.pending[0]), chromedp.WaitVisible(chromedp.ID("payload")))
	if got := text("#payload"); !strings.Contains(got, `"note": "</pre><script>alert(1)</script>"`) {
		t.Errorf("payload shown as %q, want the script as text", got)
	}
	if got := text("#metadata td"); got != hostileMeta {
		t.Errorf("metadata shown as %q, want %q", got, hostileMeta)
	}

	// Retry the head of order-7 from its page.
	id := o.givenUp[0]
	do("open the given-up list", chromedp.Navigate(srv.URL+"/events?given_up=1"), chromedp.WaitVisible(chromedp.ID("events")))
	click("open the given-up event", `#events tr[data-id="`+id+`"] a`)
	if got := text("#field-status"); got != "failed (given up)" {
		t.Fatalf("status = %q, want failed (given up)", got)
	}
	if got := text("#field-error"); got != hostileError {
		t.Errorf("last error shown as %q, want %q", got, hostileError)
	}
	screenshot("dashboard-event.png")
	click("ask to retry", "#retry")
	screenshot("dashboard-confirm.png")
	click("confirm", "#confirm")
	if got := text("#notice"); got != "Retried 1 of 1 event(s)." {
		t.Errorf("notice = %q", got)
	}
	if got := text("#field-status"); got != "pending" {
		t.Fatalf("after retry the status is %q, want pending", got)
	}

	// A relay delivers it.
	delivered := make(chan struct{})
	var once atomic.Bool
	p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(_ context.Context, e outbox.Event) error {
		if e.ID == id && once.CompareAndSwap(false, true) {
			close(delivered)
		}
		return nil
	}), outbox.Config{Clock: clock, PollInterval: 50 * time.Millisecond, CleanupInterval: -1, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	select {
	case <-delivered:
	case <-time.After(time.Minute):
		t.Fatal("the relay never delivered the retried event")
	}
	// Its outcome is recorded just after the handler returns: reload until it shows.
	deadline := time.Now().Add(30 * time.Second)
	for {
		do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("field-status")))
		if got := text("#field-status"); got == "completed" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("status still %q after the relay delivered it", got)
		}
	}

	// The overview refreshes itself: a new event shows without a reload.
	do("open the overview", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("health")))
	if err := store.Enqueue(context.Background(), clock.Now(), outbox.NewEvent("order.created", "order-99", "dana")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#count-total .n").textContent === "11"`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the overview did not refresh to 11 events: %v (shows %s)", err, liveTexts("#count-total .n")["#count-total .n"])
	}
	if n := dialogs.Load(); n != 0 {
		t.Fatalf("%d dialog(s) opened: event content ran as script", n)
	}
}
