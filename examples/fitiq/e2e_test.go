package fitiq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/internal/faultproxy"
	"github.com/fitiq/outbox/outboxtest"
)

// The seed's testEndToEndSync, ported: save a weight, find its one pending event,
// trigger processing, see the event completed and the weight in the remote history.
// Where the seed sleeps three seconds, this waits for the delivery to be reported.
func TestEndToEndSync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	r := newRemote(t)
	done := make(outcomes, 16)
	p := newProcessor(t, app, r.url, outbox.Config{Observers: []outbox.Observer{done}})

	// 1. Create progress entry.
	const weight = 72.0
	localID, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, weight, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// 2. Verify outbox event created.
	events, err := app.Store().List(ctx, outbox.Filter{UserID: user, Status: outbox.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].EntityID != localID {
		t.Fatalf("pending events %v; want one for entry %s", events, localID)
	}

	// 3. Trigger processing: start the user's processor (the seed's startProcessing,
	// whose first cycle runs at once) and ask for a cycle now (triggerProcessing).
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p.Trigger(user)

	// 4. Wait for processing: the processor reports the delivery, and Stop returns once
	// its outcome is recorded.
	await(t, done, func(o outbox.Outcome) bool { return o.ID == events[0].ID })
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// 5. Verify event completed.
	event, err := app.Store().Get(ctx, events[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if event.Status != outbox.StatusCompleted {
		t.Fatalf("event status %q (last error %q), want completed", event.Status, event.LastError)
	}

	// 6. Verify data synced to remote.
	page, err := newClient(t, r.url).History(ctx, user, fitiq.KindProgressEntry, fitiq.HistoryQuery{
		Type: string(fitiq.ProgressWeight), From: time.Now().Add(-time.Hour), To: time.Now(), Limit: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	found := slices.ContainsFunc(page.Items, func(rec fitiq.RemoteRecord) bool {
		e, err := rec.Entity()
		return err == nil && rec.ID == localID && e.(*fitiq.ProgressEntry).Quantity == weight
	})
	if !found {
		t.Fatalf("remote history %+v does not contain the %g kg entry %s", page.Items, weight, localID)
	}
	// And the local entry knows its backend ID.
	local, err := app.Local().Get(ctx, fitiq.KindProgressEntry, localID)
	if err != nil {
		t.Fatal(err)
	}
	if b := local.Base(); b.SyncStatus != fitiq.SyncSynced || b.BackendID != page.Items[0].BackendID {
		t.Fatalf("local entry: status %q backend ID %q; want synced with %q", b.SyncStatus, b.BackendID, page.Items[0].BackendID)
	}
}

// Offline: with the API unreachable, 100 entries are logged; the breaker pauses deliveries
// without spending attempts. When the network returns, the running processor syncs them all on
// its own, and the backend holds each exactly once.
func TestOfflineThenBackOnline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	r := newRemote(t)
	network := newProxy(t, r, faultproxy.Config{})
	if err := network.SetOffline(true); err != nil {
		t.Fatal(err)
	}
	seen := make(outcomes, 1024)
	// Short delays and a budget no outage in this test can exhaust: the test observes
	// state (every event failed; every event delivered), never the passing of time.
	// One batch holds every event: each cycle attempts them all, however slow the
	// machine (under -race, say) makes a cycle compared with the retry delays.
	p := newProcessor(t, app, network.URL(), outbox.Config{
		BatchSize:     200,
		MaxConcurrent: 10,
		PollInterval:  20 * time.Millisecond,
		Retry:         outbox.RetryPolicy{Delays: []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond}, MaxAttempts: 1_000_000},
		Observers:     []outbox.Observer{seen},
	})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}

	const n = 100
	ids := make([]string, n)
	day0 := time.Now().Add(-n * time.Hour)
	for i := range n {
		e, err := fitiq.SaveProgressEntryUseCase{App: app}.Execute(ctx, fitiq.ProgressEntry{
			Type: fitiq.ProgressWeight, Quantity: 70 + float64(i%20)/10, Date: day0.Add(time.Duration(i) * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = e.ID
	}

	// Offline is not a failure of the entries: the breaker opens after a few refused
	// connections, and no attempt is spent on them, however long the outage lasts.
	await(t, seen, func(o outbox.Outcome) bool {
		if o.Result == outbox.Delivered {
			t.Fatalf("event %s delivered while the network was down", o.ID)
		}
		if o.Result == outbox.Failed {
			t.Fatalf("event %s failed as the event's fault while the network was down: %s", o.ID, o.Error)
		}
		return o.Result == outbox.Released && p.Breaker().Open
	})
	if c, err := r.server.DB().Count(ctx, user); err != nil || c.Records != 0 {
		t.Fatalf("backend holds %+v (%v) while offline; want nothing", c, err)
	}

	if err := network.SetOffline(false); err != nil {
		t.Fatal(err)
	}
	delivered := map[string]bool{}
	await(t, seen, func(o outbox.Outcome) bool {
		if o.Result == outbox.Delivered {
			delivered[o.ID] = true
		}
		return len(delivered) == n
	})
	if err := p.Stop(ctx); err != nil { // returns once the outcomes are recorded
		t.Fatal(err)
	}

	st, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Completed != n || st.Total != n {
		t.Fatalf("outbox stats %+v; want %d completed of %d", st, n, n)
	}
	assertBackendHoldsEachOnce(t, app, r, ids)
}

// assertBackendHoldsEachOnce checks, through the API's history, that the backend holds
// every ID once and nothing else, and that each local entity is synced under the
// backend ID the backend reports.
func assertBackendHoldsEachOnce(t *testing.T, app *fitiq.App, r *remote, ids []string) {
	t.Helper()
	ctx := context.Background()
	client := newClient(t, r.url)
	held := map[string][]string{} // client ID → backend IDs
	for page := 1; ; page++ {
		p, err := client.History(ctx, user, fitiq.KindProgressEntry, fitiq.HistoryQuery{Page: page, Limit: fitiq.MaxHistoryLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range p.Items {
			held[rec.ID] = append(held[rec.ID], rec.BackendID)
		}
		if !p.HasMore {
			break
		}
	}
	if len(held) != len(ids) {
		t.Errorf("backend holds %d entries, want %d", len(held), len(ids))
	}
	for _, id := range ids {
		switch backendIDs := held[id]; {
		case len(backendIDs) == 0:
			t.Errorf("entry %s lost: not at the backend", id)
		case len(backendIDs) > 1:
			t.Errorf("entry %s held %d times: %v", id, len(backendIDs), backendIDs)
		default:
			e, err := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
			if err != nil {
				t.Fatal(err)
			}
			if b := e.Base(); b.SyncStatus != fitiq.SyncSynced || b.BackendID != backendIDs[0] {
				t.Errorf("local entry %s: status %q backend ID %q; want synced with %q", id, b.SyncStatus, b.BackendID, backendIDs[0])
			}
		}
	}
}

// Create-then-update of one entry with the first delivery failing, in the two ways a
// delivery fails: refused before it reaches the backend, and applied by the backend
// with its answer lost. The update waits behind the create (same ordering key); the
// backend ends with the updated value and never sees the update before the create.
func TestCreateThenUpdateWithFirstDeliveryFailing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		fault faultproxy.Fault
		// want is the backend's view of the entry, in order: method and status.
		want []string
	}{
		{faultproxy.Fail, []string{"POST 201", "PUT 200"}},
		{faultproxy.DropResponse, []string{"POST 201", "POST 409", "GET 200", "PUT 200"}},
	} {
		t.Run(c.fault.String(), func(t *testing.T) {
			ctx := context.Background()
			clock := outboxtest.NewClock(time.Now())
			app := newApp(t, clock)
			r := newRemote(t)
			network := newProxy(t, r, faultproxy.Config{})
			p := newProcessor(t, app, network.URL(), outbox.Config{Clock: clock})

			id, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 80, clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			network.Inject(c.fault)
			if n, err := p.ProcessBatch(ctx); n != 1 || err != nil {
				t.Fatalf("first cycle claimed %d (%v), want the create", n, err)
			}
			events, _ := app.Store().List(ctx, outbox.Filter{})
			if len(events) != 1 || events[0].Status != outbox.StatusFailed || events[0].GivenUp() {
				t.Fatalf("after the failed delivery: %+v; want the create failed, to be retried", events)
			}

			// The user corrects the weight while the create waits for its retry.
			if _, err := (fitiq.SaveProgressEntryUseCase{App: app}).Execute(ctx, fitiq.ProgressEntry{
				Record: fitiq.Record{ID: id}, Type: fitiq.ProgressWeight, Quantity: 79.5, Date: clock.Now()}); err != nil {
				t.Fatal(err)
			}
			if n, _ := p.ProcessBatch(ctx); n != 0 {
				t.Fatalf("claimed %d events before the create's retry was due; the update must wait behind it", n)
			}

			clock.Advance(time.Minute) // past the 1s (±10%) backoff
			if n, err := p.Drain(ctx); n != 2 || err != nil {
				t.Fatalf("drain claimed %d (%v), want the create then the update", n, err)
			}

			var got []string
			for _, req := range r.log() {
				if req.ID == id {
					got = append(got, fmt.Sprintf("%s %d", req.Method, req.Status))
				}
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("the backend saw %v, want %v", got, c.want)
			}
			rec, err := newClient(t, r.url).Get(ctx, user, fitiq.KindProgressEntry, id)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := rec.Entity()
			if q := e.(*fitiq.ProgressEntry).Quantity; q != 79.5 || rec.Version != 2 {
				t.Fatalf("backend holds %g kg at version %d, want 79.5 at version 2", q, rec.Version)
			}
			local, _ := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
			if b := local.Base(); b.SyncStatus != fitiq.SyncSynced || b.BackendID != rec.BackendID || b.Version != 2 {
				t.Fatalf("local entry %+v; want synced at version 2 with backend ID %s", *b, rec.BackendID)
			}
			if st := r.server.Stats(); st.TooEarly != 0 {
				t.Fatalf("the backend refused %d updates as too early", st.TooEarly)
			}
		})
	}
}

// User IDs are opaque: one with a space and a slash reaches its own data, and only it.
func TestUserIDsWithAnyCharacter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRemote(t)
	const odd = "ana maria/2"
	if err := r.server.DB().AddToken(ctx, odd, "odd-user-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	c, err := fitiq.NewClient(fitiq.ClientConfig{BaseURL: r.url + "/", Token: "odd-user-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	e := &fitiq.ProgressEntry{Record: fitiq.Record{ID: "0194b7c2-0000-7000-8000-000000000001", Version: 1}, Type: fitiq.ProgressWeight, Quantity: 61, Date: time.Now().UTC().Truncate(time.Microsecond)}
	if _, err := c.Create(ctx, odd, e); err != nil {
		t.Fatal(err)
	}
	page, err := c.History(ctx, odd, fitiq.KindProgressEntry, fitiq.HistoryQuery{})
	if err != nil || page.Total != 1 {
		t.Fatalf("history of %q: %+v, %v", odd, page, err)
	}
	if _, err := c.History(ctx, "ana maria", fitiq.KindProgressEntry, fitiq.HistoryQuery{}); !isStatus(err, 403) {
		t.Fatalf("another user's path: %v, want 403", err)
	}
}

func isStatus(err error, status int) bool {
	var apiErr *fitiq.APIError
	return errors.As(err, &apiErr) && apiErr.Status == status
}
