package faultproxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/fitiq/outbox/examples/fitiq/internal/faultproxy"
)

func target(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Target", "yes")
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s, &hits
}

func start(t *testing.T, cfg faultproxy.Config) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// get uses a fresh connection per request, so that a cut connection is not reused.
func get(url string) (*http.Response, string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

func TestScriptedFaults(t *testing.T) {
	s, hits := target(t)
	p := start(t, faultproxy.Config{Target: s.URL})
	p.Inject(faultproxy.Fail, faultproxy.Throttle, faultproxy.DropRequest, faultproxy.DropResponse, faultproxy.Delay)
	cases := []struct {
		fault    faultproxy.Fault
		status   int // 0: the connection is cut
		reached  bool
		retryHdr string
	}{
		{faultproxy.Fail, 503, false, ""},
		{faultproxy.Throttle, 429, false, "1"},
		{faultproxy.DropRequest, 0, false, ""},
		{faultproxy.DropResponse, 0, true, ""},
		{faultproxy.Delay, 200, true, ""},
		{faultproxy.Pass, 200, true, ""},
	}
	for _, c := range cases {
		before := hits.Load()
		resp, body, err := get(p.URL() + "/x")
		switch {
		case c.status == 0 && err == nil:
			t.Errorf("%s: got an answer (%d), want the connection cut", c.fault, resp.StatusCode)
		case c.status != 0 && (err != nil || resp.StatusCode != c.status):
			t.Errorf("%s: %v %v, want %d", c.fault, resp, err, c.status)
		case c.status == 200 && (body != "hello /x" || resp.Header.Get("X-Target") != "yes"):
			t.Errorf("%s: forwarded answer %q, headers %v", c.fault, body, resp.Header)
		case c.retryHdr != "" && resp.Header.Get("Retry-After") != c.retryHdr:
			t.Errorf("%s: Retry-After %q, want %q", c.fault, resp.Header.Get("Retry-After"), c.retryHdr)
		}
		if reached := hits.Load() > before; reached != c.reached {
			t.Errorf("%s: reached the target %v, want %v", c.fault, reached, c.reached)
		}
	}
}

func TestOfflineRefusesThenComesBackOnTheSamePort(t *testing.T) {
	s, _ := target(t)
	p := start(t, faultproxy.Config{Target: s.URL})
	if _, _, err := get(p.URL()); err != nil {
		t.Fatal(err)
	}
	if err := p.SetOffline(true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(p.URL()); err == nil {
		t.Fatal("a request got through while offline")
	}
	if err := p.SetOffline(false); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := get(p.URL()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("back online: %v %v", resp, err)
	}
	if st := p.Stats(); st.Outages != 1 || st.Offline <= 0 {
		t.Fatalf("stats %+v; want one outage with its duration", st)
	}
}

// The same seed picks the same faults for the same sequence of requests.
func TestSeededFaultsAreReproducible(t *testing.T) {
	s, _ := target(t)
	run := func(seed uint64) []int {
		p := start(t, faultproxy.Config{Target: s.URL, Seed: seed, Fail: 0.3, Throttle: 0.2})
		var statuses []int
		for range 40 {
			resp, _, err := get(p.URL())
			if err != nil {
				t.Fatal(err)
			}
			statuses = append(statuses, resp.StatusCode)
		}
		return statuses
	}
	a, b, c := run(7), run(7), run(8)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 7 twice: %v and %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 7 and 8 picked the same faults: %v", a)
	}
}

func TestConfigIsValidated(t *testing.T) {
	for _, cfg := range []faultproxy.Config{
		{Target: "ftp://x"},
		{Target: "http://127.0.0.1:1", Fail: 1.5},
		{Target: "http://127.0.0.1:1", Fail: 0.6, DropRequest: 0.6},
	} {
		if _, err := faultproxy.Start(cfg); err == nil {
			t.Errorf("Start(%+v) accepted it", cfg)
		}
	}
}
