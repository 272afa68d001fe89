package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

func TestServeRefusesTheNetworkWithoutAToken(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != ExitOK {
		t.Fatal(r)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.10:8080", "example.com:80"} {
		r := runEnv(t, Env{}, "serve", "--dsn", b.dsn, "--addr", addr)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "refusing to serve the dashboard on "+addr+" without a token") {
			t.Errorf("serve --addr %s: %v", addr, r)
		}
	}
}

// startServe runs `outbox serve` until the test ends and returns its address.
func startServe(t *testing.T, args ...string) (addr string, stop func() result) {
	t.Helper()
	addrs := make(chan string, 1)
	env := Env{onListen: func(a string) { addrs <- a }, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		var out, errb syncBuffer
		env.Stdout, env.Stderr = &out, &errb
		code := Main(ctx, append([]string{"serve"}, args...), env)
		done <- result{code, out.String(), errb.String()}
	}()
	select {
	case addr = <-addrs:
	case r := <-done:
		t.Fatalf("serve exited at start: %v", r)
	}
	t.Cleanup(cancel)
	return addr, func() result {
		cancel()
		select {
		case r := <-done:
			return r
		case <-time.After(time.Minute):
			t.Fatal("serve did not stop")
			return result{}
		}
	}
}

func TestServeShowsTheOutbox(t *testing.T) {
	t.Parallel()
	b := sqliteBackend(t)
	if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn); r.code != ExitOK {
		t.Fatal(r)
	}
	s := b.open(t)
	if err := s.Enqueue(context.Background(), time.Now(), outbox.NewEvent("order.created", "o-1", "u"), outbox.NewEvent("order.created", "o-2", "u")); err != nil {
		t.Fatal(err)
	}
	get := func(url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}

	t.Run("loopback", func(t *testing.T) {
		addr, stop := startServe(t, "--dsn", b.dsn, "--addr", "127.0.0.1:0")
		code, body := get("http://"+addr+"/", "")
		if code != http.StatusOK || !strings.Contains(body, `id="count-pending" href="/events?status=pending"><span class="n">2</span>`) {
			t.Fatalf("GET / = %d: %.400s", code, body)
		}
		if r := stop(); r.code != ExitOK || !strings.Contains(r.stderr, "serving the dashboard") {
			t.Fatalf("serve: %v", r)
		}
	})
	t.Run("token", func(t *testing.T) {
		addr, stop := startServe(t, "--dsn", b.dsn, "--addr", "0.0.0.0:0", "--token", "s3cret", "--read-only")
		addr = strings.Replace(addr, "0.0.0.0", "127.0.0.1", 1)
		addr = strings.Replace(addr, "[::]", "127.0.0.1", 1)
		if code, _ := get("http://"+addr+"/events", ""); code != http.StatusUnauthorized {
			t.Fatalf("GET without the token = %d, want 401", code)
		}
		code, body := get("http://"+addr+"/events", "s3cret")
		if code != http.StatusOK || !strings.Contains(body, "read-only") || !strings.Contains(body, "o-2") {
			t.Fatalf("GET with the token = %d: %.400s", code, body)
		}
		if r := stop(); r.code != ExitOK {
			t.Fatalf("serve: %v", r)
		}
	})
}

// serve --layout=log shows what waits on the event log (dashboard.Config.LogWaiting),
// and its chart counts what the log delivered (dashboard.Config.LogTimeline), on both
// stores.
func TestServeShowsTheLog(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		if r := runEnv(t, Env{}, "migrate", "--dsn", b.dsn, "--layout=log"); r.code != ExitOK {
			t.Fatal(r)
		}
		if r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--layout=log", "--type", "order.created", "--entity", "o-1"); r.code != ExitOK {
			t.Fatal(r)
		}
		addr, stop := startServe(t, "--dsn", b.dsn, "--addr", "127.0.0.1:0", "--layout=log")
		res, err := http.Get("http://" + addr + "/api/overview")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !regexp.MustCompile(`"log": \{\s*"events": 1,`).Match(body) {
			t.Errorf("GET /api/overview = %d: want the log's one event: %.600s", res.StatusCode, body)
		}
		if r := stop(); r.code != ExitOK {
			t.Errorf("serve: %v", r)
		}

		// Two cursors: a has passed the first event, b does not exist yet (the whole log,
		// 3); the dashboard's one log is their sum.
		sink := newAcceptAll(t)
		if r := runEnv(t, Env{}, "relay", "--dsn", b.dsn, "--layout=log", "--log-cursor", "a", "--sink", sink.srv.URL, "--once"); r.code != ExitOK {
			t.Fatal(r)
		}
		for _, e := range []string{"o-2", "o-3"} {
			if r := runEnv(t, Env{}, "enqueue", "--dsn", b.dsn, "--layout=log", "--type", "order.created", "--entity", e); r.code != ExitOK {
				t.Fatal(r)
			}
		}
		addr, stop = startServe(t, "--dsn", b.dsn, "--addr", "127.0.0.1:0", "--layout=log", "--log-cursor", "a", "--log-cursor", "b")
		res, err = http.Get("http://" + addr + "/api/overview")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !regexp.MustCompile(`"log": \{\s*"events": 5,`).Match(body) {
			t.Errorf("GET /api/overview with cursors a and b = %d: want 2 + 3 events: %.600s", res.StatusCode, body)
		}
		// The chart counts what the log delivered (o-1, by cursor a's relay), which left no
		// row in the events table: in its minute's bucket and in the window's totals.
		var chart struct {
			Window struct {
				Completed int `json:"completed"`
			} `json:"window"`
			Timeline []outbox.TimelineBucket `json:"timeline"`
		}
		if err := json.Unmarshal(body, &chart); err != nil {
			t.Fatal(err)
		}
		inBuckets := 0
		for _, b := range chart.Timeline {
			inBuckets += b.Completed
		}
		if chart.Window.Completed != 1 || inBuckets != 1 {
			t.Errorf("the chart shows %d completed in its window and %d in its minutes, want the log's 1 delivery: %.600s", chart.Window.Completed, inBuckets, body)
		}
		if r := stop(); r.code != ExitOK {
			t.Errorf("serve: %v", r)
		}
	})
}
