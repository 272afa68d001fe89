package main

import (
	"strings"
	"testing"
)

func TestParseSpecs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		labels  []string
		wantErr string
	}{
		{in: "outbox", labels: []string{"outbox"}},
		{in: "outbox:b=1000,c=100,k=2;river:w=10000; watermill", labels: []string{"outbox-b1000-c100-k2-r1", "river-w10000", "watermill"}},
		{in: "river", labels: []string{"river-w100"}},
		{in: "watermill:sb=500", labels: []string{"watermill-sb500"}},
		{in: "kafka", wantErr: `unknown system "kafka"`},
		{in: "outbox:w=10", wantErr: `unknown key "w" for outbox`},
		{in: "river:w=0", wantErr: `"w=0" is not key=positive number`},
		{in: "outbox:b", wantErr: `"b" is not key=positive number`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			specs, err := parseSpecs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseSpecs(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSpecs(%q): %v", tc.in, err)
			}
			var labels []string
			for _, sp := range specs {
				labels = append(labels, sp.V.Label)
			}
			if strings.Join(labels, " ") != strings.Join(tc.labels, " ") {
				t.Fatalf("labels = %q, want %q", labels, tc.labels)
			}
		})
	}
}

func TestQuantileAndMedian(t *testing.T) {
	sorted := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want float64
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0, 1}} {
		if got := quantile(sorted, tc.q); got != tc.want {
			t.Errorf("quantile(1..10, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3,1,2) = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median(4,1,3,2) = %v, want 2.5", got)
	}
}

func TestRatiosAreTakenWithinRounds(t *testing.T) {
	rs := newResults()
	for _, v := range [][2]float64{{100, 50}, {40, 20}, {90, 30}} { // ours, theirs per round
		rs.add([]result{
			{Phase: "Drain", Label: "ours", Metrics: []metric{{"events/s", v[0]}}},
			{Phase: "Drain", Label: "theirs", Metrics: []metric{{"events/s", v[1]}}},
		})
	}
	got := rs.ratios("Drain", "ours", "theirs", "events/s")
	want := []float64{2, 2, 3}
	if len(got) != len(want) {
		t.Fatalf("ratios = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ratios = %v, want %v", got, want)
		}
	}
	// The ratio of medians (90/30 = 3) is not the median of ratios (2).
	if m := median(got); m != 2 {
		t.Fatalf("median ratio = %v, want 2", m)
	}
}

func TestRotate(t *testing.T) {
	s := []string{"a", "b", "c"}
	for round, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := strings.Join(rotate(s, round), ""); got != want {
			t.Errorf("rotate(abc, %d) = %s, want %s", round, got, want)
		}
	}
	if strings.Join(s, "") != "abc" {
		t.Errorf("rotate changed its input: %v", s)
	}
}
