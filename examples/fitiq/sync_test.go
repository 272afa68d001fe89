package fitiq_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
)

type scripted struct {
	status int
	header map[string]string
	body   string
}

// scriptedAPI answers each request with the next scripted answer and records what it got.
type scriptedAPI struct {
	mu      sync.Mutex
	answers []scripted
	got     []string
}

func (s *scriptedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, r.Method+" "+r.URL.Path)
	if len(s.answers) == 0 {
		http.Error(w, "unscripted request", http.StatusTeapot)
		return
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write([]byte(a.body))
}

func TestSyncHandlerOutcomes(t *testing.T) {
	t.Parallel()
	const backendID = `{"backend_id":"b-42","id":"x","kind":"progress-entries","version":1}`
	type want int
	const (
		ok want = iota
		retry
		permanent
	)
	cases := []struct {
		name       string
		answers    []scripted
		attempts   int // of the event; 5 is the last of the default budget
		noEntity   bool
		wantResult want
		retryAfter time.Duration
		slack      time.Duration // for an HTTP-date Retry-After, which moves with the clock
		wantLocal  fitiq.SyncStatus
		wantCalls  []string
	}{
		{name: "201", answers: []scripted{{201, nil, backendID}}, wantResult: ok, wantLocal: fitiq.SyncSynced, wantCalls: []string{"POST"}},
		{name: "409 is success: the backend ID is looked up", answers: []scripted{{409, nil, `{"error":"exists"}`}, {200, nil, backendID}},
			wantResult: ok, wantLocal: fitiq.SyncSynced, wantCalls: []string{"POST", "GET"}},
		{name: "409 then the lookup fails", answers: []scripted{{409, nil, ``}, {503, nil, ``}}, wantResult: retry, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST", "GET"}},
		{name: "400", answers: []scripted{{400, nil, `{"error":"quantity: out of range"}`}}, wantResult: permanent, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "401", answers: []scripted{{401, nil, ``}}, wantResult: permanent, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "403", answers: []scripted{{403, nil, ``}}, wantResult: permanent, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "404", answers: []scripted{{404, nil, ``}}, wantResult: permanent, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "413", answers: []scripted{{413, nil, ``}}, wantResult: permanent, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "408", answers: []scripted{{408, nil, ``}}, wantResult: retry, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "425", answers: []scripted{{425, map[string]string{"Retry-After": "2"}, ``}}, wantResult: retry, retryAfter: 2 * time.Second, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "429 with Retry-After", answers: []scripted{{429, map[string]string{"Retry-After": "7"}, ``}}, wantResult: retry, retryAfter: 7 * time.Second, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "500", answers: []scripted{{500, nil, ``}}, wantResult: retry, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "503 with an HTTP-date Retry-After", answers: []scripted{{503, map[string]string{"Retry-After": time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, ``}},
			wantResult: retry, retryAfter: time.Hour, slack: 30 * time.Minute, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "503 on the last attempt", attempts: 5, answers: []scripted{{503, nil, ``}}, wantResult: retry, wantLocal: fitiq.SyncFailed, wantCalls: []string{"POST"}},
		{name: "201 without a backend ID", answers: []scripted{{201, nil, `{}`}}, wantResult: retry, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "201 with a garbled body", answers: []scripted{{201, nil, `{"backend_`}}, wantResult: retry, wantLocal: fitiq.SyncPending, wantCalls: []string{"POST"}},
		{name: "entity deleted locally", noEntity: true, wantResult: permanent, wantCalls: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			app := newApp(t, nil)
			api := &scriptedAPI{answers: c.answers}
			hs := httptest.NewServer(api)
			defer hs.Close()
			handlers, err := fitiq.NewHandlers(fitiq.SyncConfig{Local: app.Local(), Client: newClient(t, hs.URL), Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			id, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 72, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if c.noEntity {
				if _, err := app.Store().DB().ExecContext(ctx, `DELETE FROM progress_entries WHERE id = ?`, id); err != nil {
					t.Fatal(err)
				}
			}
			ev := outbox.Event{ID: "ev", Type: fitiq.TypeProgressEntry, EntityID: id, UserID: user, IsNewRecord: true, Attempts: max(c.attempts, 1)}
			err = handlers.Handle(ctx, ev)

			switch {
			case c.wantResult == ok && err != nil:
				t.Fatalf("got %v, want success", err)
			case c.wantResult == retry && (err == nil || outbox.IsPermanent(err)):
				t.Fatalf("got %v, want a retryable error", err)
			case c.wantResult == permanent && !outbox.IsPermanent(err):
				t.Fatalf("got %v, want a permanent error", err)
			}
			if d, _ := outbox.RetryAfterDelay(err); d > c.retryAfter || d < c.retryAfter-c.slack {
				t.Errorf("retry after %s, want %s (less at most %s)", d, c.retryAfter, c.slack)
			}
			var calls []string
			for _, g := range api.got {
				calls = append(calls, strings.Fields(g)[0])
			}
			if strings.Join(calls, ",") != strings.Join(c.wantCalls, ",") {
				t.Errorf("calls %v, want %v", calls, c.wantCalls)
			}
			if c.noEntity {
				return
			}
			e, err := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
			if err != nil {
				t.Fatal(err)
			}
			if b := e.Base(); b.SyncStatus != c.wantLocal || (c.wantLocal == fitiq.SyncSynced) != (b.BackendID == "b-42") {
				t.Errorf("local entry %q with backend ID %q, want %q", b.SyncStatus, b.BackendID, c.wantLocal)
			}
		})
	}
}

// A network that never answers is a retry, not a give-up.
func TestSyncHandlerNetworkErrorRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	hs := httptest.NewServer(http.NotFoundHandler())
	url := hs.URL
	hs.Close() // nothing listens there any more
	handlers, _ := fitiq.NewHandlers(fitiq.SyncConfig{Local: app.Local(), Client: newClient(t, url), Logger: quiet})
	id, _ := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 72, time.Now())
	err := handlers.Handle(ctx, outbox.Event{Type: fitiq.TypeProgressEntry, EntityID: id, UserID: user, IsNewRecord: true, Attempts: 1})
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("connection refused: %v, want a retryable error", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 31, 8, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"Fri, 31 Jan 2025 08:01:30 GMT", 90 * time.Second, true},
		{"Fri, 31 Jan 2025 07:00:00 GMT", 0, true}, // in the past: retry now
	} {
		got, ok := fitiq.ParseRetryAfter(c.header, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", c.header, got, ok, c.want, c.ok)
		}
	}
}
