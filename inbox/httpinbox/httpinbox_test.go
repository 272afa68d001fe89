package httpinbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/httpinbox"
	"github.com/fitiq/outbox/inbox/inboxtest"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/httpsink"
)

// receiver is a server whose handler inserts one row per applied request, then
// answers as handler does.
type receiver struct {
	*inboxtest.Receiver
	srv *httptest.Server
}

func newReceiver(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{Receiver: inboxtest.NewReceiver(t)}
	mw, err := httpinbox.New(rc.Inbox, httpinbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	rc.srv = httptest.NewServer(mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := rc.Apply(r.Context(), httpinbox.Tx(r.Context()), r.Header.Get("Idempotency-Key")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		handler(w, r)
	})))
	t.Cleanup(rc.srv.Close)
	return rc
}

func post(t *testing.T, url, key string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestAnswers(t *testing.T) {
	fail := true
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/flaky" && fail:
			fail = false
			http.Error(w, "not now", http.StatusInternalServerError)
		case r.URL.Path == "/panic":
			panic(http.ErrAbortHandler) // net/http closes the connection quietly
		default:
			w.Header().Set("Location", "/things/1")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "created")
		}
	})
	old := uuid.Must(uuid.NewV7())
	ms := time.Now().Add(-inbox.DefaultRetention - time.Hour).UnixMilli()
	for i := range 6 {
		old[i] = byte(ms >> (8 * (5 - i)))
	}

	tests := []struct {
		name, path, key string
		wantStatus      int
		wantBody        string
		wantReplayed    bool
		wantEffects     int
	}{
		{"first delivery gets the handler's answer", "/", "k1", http.StatusCreated, "created", false, 1},
		{"replay gets 200, no second effect", "/", "k1", http.StatusOK, "", true, 1},
		{"handler's 500 rolls the effect back", "/flaky", "k2", http.StatusInternalServerError, "not now\n", false, 0},
		{"the retry after a 500 applies", "/flaky", "k2", http.StatusCreated, "created", false, 1},
		{"no key is refused", "/", "", http.StatusBadRequest, "Idempotency-Key header is required\n", false, 0},
		{"message older than the window is gone", "/", old.String(), http.StatusGone, "", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, rc.srv.URL+tt.path, tt.key)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusGone && body != tt.wantBody {
				t.Fatalf("body %q, want %q", body, tt.wantBody)
			}
			if got := resp.Header.Get(httpinbox.ReplayedHeader) == "true"; got != tt.wantReplayed {
				t.Fatalf("replayed header %v, want %v", got, tt.wantReplayed)
			}
			if tt.key != "" {
				if n := rc.Effects(t, tt.key); n != tt.wantEffects {
					t.Fatalf("%d effects, want %d", n, tt.wantEffects)
				}
			}
		})
	}

	t.Run("a panicking handler's effect is rolled back", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, rc.srv.URL+"/panic", nil)
		req.Header.Set("Idempotency-Key", "k3")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("a panic answered %s", resp.Status)
		}
		if n := rc.Effects(t, "k3"); n != 0 {
			t.Fatalf("%d effects, want 0", n)
		}
		if n, _ := rc.Inbox.Count(context.Background()); n != 2 {
			t.Fatalf("%d keys recorded, want k1 and k2", n)
		}
	})
}

// The outbox's httpsink delivers the same event twice (its first answer was lost):
// the middleware, with its defaults, finds the event ID where httpsink puts it, and
// the second delivery counts as delivered without a second effect.
func TestHTTPSinkRedelivery(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s, err := httpsink.New(httpsink.Config{URL: rc.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := outbox.NewEvent("order.created", "order-1", "")
	if err := e.Prepare(time.Now(), outbox.DefaultMaxPayloadBytes); err != nil { // as a store does: it gets its UUIDv7
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Handle(context.Background(), *e); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	if n := rc.Effects(t, e.ID); n != 1 {
		t.Fatalf("%d effects after 3 deliveries, want 1", n)
	}
	if st := rc.Inbox.Stats(); st.Applied != 1 || st.Duplicates != 2 {
		t.Fatalf("inbox stats %+v, want 1 applied, 2 duplicates", st)
	}
}

func TestConfig(t *testing.T) {
	if _, err := httpinbox.New(nil, httpinbox.Config{}); !errors.Is(err, outbox.ErrInvalid) {
		t.Fatalf("nil inbox: %v", err)
	}
	err := httpinbox.Config{ReplayStatus: 302}.Validate()
	if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), "ReplayStatus") {
		t.Fatalf("ReplayStatus 302: %v, want an error naming it", err)
	}
}

// With Replay set, a replay is answered by it, outside the transaction.
func TestReplayHandler(t *testing.T) {
	rc := inboxtest.NewReceiver(t)
	mw, err := httpinbox.New(rc.Inbox, httpinbox.Config{Replay: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if httpinbox.Tx(r.Context()) != nil {
			t.Error("Replay ran inside a transaction")
		}
		io.WriteString(w, "as it stands")
	})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := rc.Apply(r.Context(), httpinbox.Tx(r.Context()), r.Header.Get("Idempotency-Key")); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusCreated)
	})))
	defer srv.Close()
	for i, want := range []string{"201 ", "200 as it stands"} {
		resp, body := post(t, srv.URL, "k")
		if got := fmt.Sprintf("%d %s", resp.StatusCode, body); got != want {
			t.Fatalf("delivery %d answered %q, want %q", i+1, got, want)
		}
	}
	if n := rc.Effects(t, "k"); n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
}
