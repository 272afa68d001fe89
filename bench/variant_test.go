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
		{in: "limit:b=1000;outbox:b=1000,o=1;limit:b=1000,o=1", labels: []string{"limit-b1000", "outbox-b1000-c3-k1-r1-keyed", "limit-b1000-keyed"}},
		{in: "limit:c=5", wantErr: `unknown key "c" for limit`},
		{in: "log-relay", labels: []string{"log-relay-b500"}},
		{in: "log-relay:b=1000;log-relay:b=1000,c=100;log-relay:b=1000,o=1;log-limit:b=1000", labels: []string{"log-relay-b1000", "log-relay-b1000-c100", "log-relay-b1000-keyed", "log-limit-b1000"}},
		{in: "log-relay:k=2", wantErr: `unknown key "k" for log-relay`},
		{in: "log-relay:r=2", wantErr: `unknown key "r" for log-relay`},
		{in: "log-limit:c=2", wantErr: `unknown key "c" for log-limit`},
		{in: "log-relay:o=2", wantErr: `o takes 1`},
		{in: "river:o=1", wantErr: `unknown key "o" for river`},
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

func TestLogSpecs(t *testing.T) {
	specs, err := parseSpecs("log-relay:b=1000;log-relay:b=1000,c=100,o=1;log-limit:b=1000")
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		if sp.System != "log-tx" {
			t.Errorf("%s runs on system %q, want log-tx", sp.V.Label, sp.System)
		}
	}
	want := []variant{
		{Label: "log-relay-b1000", BatchSize: 1000, BatchHandler: true},
		{Label: "log-relay-b1000-c100-keyed", BatchSize: 1000, MaxConcurrent: 100, Keyed: true},
		{Label: "log-limit-b1000", BatchSize: 1000, Floor: true},
	}
	for i, w := range want {
		if specs[i].V != w {
			t.Errorf("spec %d = %+v, want %+v", i, specs[i].V, w)
		}
	}
}

func TestLimitOf(t *testing.T) {
	specs, err := parseSpecs("limit:b=1000;outbox:b=1000,c=100,k=2;outbox:b=2000,c=200,k=2;" +
		"log-limit:b=500;log-limit:b=1000;log-limit:b=1000,o=1;log-relay:b=1000;log-relay:b=1000,o=1;log-relay:b=2000;river:w=100")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"limit-b1000":             "",
		"outbox-b1000-c100-k2-r1": "limit-b1000",
		"outbox-b2000-c200-k2-r1": "limit-b1000", // no floor of its batch size: the first
		"log-limit-b500":          "",
		"log-relay-b1000":         "log-limit-b1000",
		"log-relay-b1000-keyed":   "log-limit-b1000-keyed",
		"log-relay-b2000":         "log-limit-b500",
		"river-w100":              "",
	}
	for _, sp := range specs {
		w, ok := want[sp.V.Label]
		if !ok {
			continue
		}
		if got := limitOf(sp, specs); got != w {
			t.Errorf("limitOf(%s) = %q, want %q", sp.V.Label, got, w)
		}
	}
}

func TestDrainSummaryReadsTheLogAgainstRiverAndItsLimit(t *testing.T) {
	specs, err := parseSpecs("limit:b=1000;outbox:b=1000,c=100,k=2;log-limit:b=1000;log-relay:b=1000;river:w=1000;river:w=10000")
	if err != nil {
		t.Fatal(err)
	}
	rs := newResults()
	// Per round: outbox limit, outbox, log limit, log relay, river-w1000, river-w10000.
	// River's best by median is river-w10000 (30 > 20), though one round it is slower.
	for _, v := range [][6]float64{{40, 50, 100, 80, 20, 30}, {40, 50, 100, 90, 20, 10}, {40, 50, 100, 60, 20, 30}} {
		var round []result
		for i, sp := range specs {
			round = append(round, result{Phase: "Drain", Label: sp.V.Label, Metrics: []metric{{"events/s", v[i]}, {"WAL-B/event", 0.5}}})
		}
		rs.add(round)
	}
	if got := rs.best("Drain", rs.labels["Drain"], "river", "events/s"); got != "river-w10000" {
		t.Fatalf("best river = %q, want river-w10000", got)
	}
	sum := rs.summary(options{drainSpecs: specs, drainEvents: 50000}, machine{})
	var row string
	for line := range strings.SplitSeq(sum, "\n") {
		if strings.HasPrefix(line, "| log-relay-b1000 |") {
			row = line
		}
	}
	if row == "" {
		t.Fatalf("no log-relay row in\n%s", sum)
	}
	// ÷ river-w10000 within rounds: 80/30, 90/10, 60/30 → median 2.67; ÷ its limit
	// (log-limit-b1000): 0.8, 0.9, 0.6 → median 0.80; outbox ÷ relay: 50/80, 50/90,
	// 50/60 → median 0.62.
	for _, cell := range []string{"| **0.62×** (0.56–0.83) |", "| **2.67×** (2.00–9.00) |", "| log-limit-b1000: **0.80×** (0.60–0.90) |"} {
		if !strings.Contains(row, cell) {
			t.Errorf("log-relay row lacks %q:\n%s", cell, row)
		}
	}
	if !strings.HasSuffix(row, "| 0.50 |") {
		t.Errorf("log-relay row's WAL per event is not 0.50:\n%s", row)
	}
	if !strings.Contains(sum, "consumer ÷ river-w10000") {
		t.Errorf("summary does not name River's best in its header:\n%s", sum)
	}
}
