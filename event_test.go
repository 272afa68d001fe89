package outbox_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// The predicates an application reads on an event, on each state a store leaves it in.
func TestEventPredicatesFollowItsState(t *testing.T) {
	lease := t0.Add(time.Minute)
	cases := []struct {
		name          string
		e             outbox.Event
		at            time.Time
		givenUp       bool
		staleAfterMin bool // stale at at with StaleAfter of a minute
	}{
		{"pending", outbox.Event{Status: outbox.StatusPending, NextAttemptAt: t0}, t0.Add(2 * time.Minute), false, true},
		{"pending, just now", outbox.Event{Status: outbox.StatusPending, NextAttemptAt: t0}, t0, false, false},
		{"processing under its lease", outbox.Event{Status: outbox.StatusProcessing, Attempts: 1, LeaseExpiresAt: lease}, t0.Add(59 * time.Second), false, false},
		{"retrying, due long ago", outbox.Event{Status: outbox.StatusFailed, Attempts: 1, NextAttemptAt: t0}, t0.Add(time.Hour), false, true},
		{"given up", outbox.Event{Status: outbox.StatusFailed, Attempts: outbox.DefaultMaxAttempts}, t0.Add(24 * time.Hour), true, false},
		{"given up with attempts left (permanent error)", outbox.Event{Status: outbox.StatusFailed, Attempts: 1}, t0, true, false},
		{"completed", outbox.Event{Status: outbox.StatusCompleted, Attempts: 1, CompletedAt: t0}, t0.Add(time.Hour), false, false},
	}
	for _, tc := range cases {
		e := tc.e
		if got := e.GivenUp(); got != tc.givenUp {
			t.Errorf("%s: GivenUp = %v, want %v", tc.name, got, tc.givenUp)
		}
		if got := e.IsStale(tc.at, time.Minute); got != tc.staleAfterMin {
			t.Errorf("%s: IsStale = %v, want %v", tc.name, got, tc.staleAfterMin)
		}
	}
}

// ResetForRetry is what an operator's retry writes back: pending, due now, a fresh
// budget, the error history kept.
func TestResetForRetryKeepsTheHistory(t *testing.T) {
	e := outbox.Event{Status: outbox.StatusFailed, Attempts: 5, LastError: "503",
		Errors: []outbox.AttemptError{{Attempt: 4, Error: "503"}, {Attempt: 5, Error: "503"}}}
	e.ResetForRetry(t0)
	if e.Status != outbox.StatusPending || e.Attempts != 0 || !e.NextAttemptAt.Equal(t0) || len(e.Errors) != 2 {
		t.Fatalf("reset for retry: %+v", e)
	}
}

// A NUL byte (or invalid UTF-8) is refused by the core, whatever the store, naming the field.
func TestValidateRefusesTextNoStoreCanHold(t *testing.T) {
	cases := []struct {
		field string
		e     *outbox.Event
	}{
		{"EntityID", &outbox.Event{Type: "t", EntityID: "a\x00b"}},
		{"Type", &outbox.Event{Type: "t\xff", EntityID: "e"}},
		{"UserID", &outbox.Event{Type: "t", EntityID: "e", UserID: "\x00"}},
		{"OrderingKey", &outbox.Event{Type: "t", EntityID: "e", OrderingKey: "k\x00"}},
		{"Metadata", &outbox.Event{Type: "t", EntityID: "e", Metadata: map[string]string{"k": "v\x00"}}},
	}
	for _, tc := range cases {
		err := tc.e.Validate(0)
		var fe *outbox.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, outbox.ErrInvalid) {
			t.Errorf("%s: Validate = %v, want a FieldError naming %s", tc.field, err, tc.field)
		}
	}
}

func TestEventIsStale(t *testing.T) {
	pending := outbox.Event{Status: outbox.StatusPending, NextAttemptAt: t0}
	retrying := outbox.Event{Status: outbox.StatusFailed, NextAttemptAt: t0}
	givenUp := outbox.Event{Status: outbox.StatusFailed}
	tests := []struct {
		name  string
		e     outbox.Event
		after time.Duration
		want  bool
	}{
		{"pending, due 4m", pending, 4 * time.Minute, false},
		{"pending, due 6m", pending, 6 * time.Minute, true},
		{"retrying, due 6m", retrying, 6 * time.Minute, true},
		{"given up long ago", givenUp, time.Hour, false},
	}
	for _, tc := range tests {
		if got := tc.e.IsStale(t0.Add(tc.after), 5*time.Minute); got != tc.want {
			t.Errorf("%s: IsStale = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEventValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name  string
		e     outbox.Event
		limit int
		field string
	}{
		{"empty type", outbox.Event{EntityID: "e"}, 0, "Type"},
		{"empty entity ID", outbox.Event{Type: "t"}, 0, "EntityID"},
		{"type too long", outbox.Event{Type: strings.Repeat("t", 256), EntityID: "e"}, 0, "Type"},
		{"payload over a configured limit", outbox.Event{Type: "t", EntityID: "e", Payload: []byte(`"12345"`)}, 4, "Payload"},
		{"invalid JSON payload", outbox.Event{Type: "t", EntityID: "e", Payload: []byte(`{`)}, 0, "Payload"},
		{"unknown status", outbox.Event{Type: "t", EntityID: "e", Status: "sent"}, 0, "Status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate(tc.limit)
			var fe *outbox.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, outbox.ErrInvalid) {
				t.Fatalf("Validate = %v, want an ErrInvalid FieldError for %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("message %q does not name %s", err, tc.field)
			}
		})
	}
	ok := outbox.Event{Type: "t", EntityID: "e", Payload: []byte(`{"kg":72}`)}
	if err := ok.Validate(0); err != nil {
		t.Fatalf("a valid event: %v", err)
	}
}

func TestParseStatus(t *testing.T) {
	for _, s := range []string{"pending", "processing", "completed", "failed"} {
		if st, err := outbox.ParseStatus(s); err != nil || string(st) != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, st, err)
		}
	}
	if _, err := outbox.ParseStatus("done"); !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), `"done"`) {
		t.Errorf("ParseStatus(done) = %v, want ErrInvalid naming it", err)
	}
}

func TestRetryPolicyFollowsTheDefaultSchedule(t *testing.T) {
	var p outbox.RetryPolicy
	want := []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w {
			t.Errorf("Delay(%d) = %s, want %s", i+1, got, w)
		}
	}
	noJitter := outbox.RetryPolicy{Jitter: -1}
	if got := noJitter.NextAttemptAt(t0, 3); !got.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("without jitter NextAttemptAt(3) = %v", got)
	}
	seen := map[time.Time]bool{}
	for range 200 {
		at := p.NextAttemptAt(t0, 3)
		if d := at.Sub(t0); d < 27*time.Second || d > 33*time.Second {
			t.Fatalf("with 10%% jitter a 30s delay became %s", d)
		}
		seen[at] = true
	}
	if len(seen) < 100 {
		t.Fatalf("jitter produced only %d distinct times in 200", len(seen))
	}
}

func TestHealthRules(t *testing.T) {
	tests := []struct {
		name  string
		stats outbox.Stats
		rules outbox.HealthRules
		want  []string
	}{
		{"quiet", outbox.Stats{Completed: 100, Recent: outbox.WindowCounts{Completed: 100}}, outbox.HealthRules{}, nil},
		{"one stale", outbox.Stats{Pending: 1, Stale: 1}, outbox.HealthRules{}, []string{"stale"}},
		{"one stuck", outbox.Stats{Processing: 1, Stuck: 1}, outbox.HealthRules{}, []string{"stuck"}},
		{"due for 16m", outbox.Stats{Pending: 1, Stale: 1, OldestDueAge: 16 * time.Minute}, outbox.HealthRules{}, []string{"stale", "oldest_due"}},
		{"due for 15m", outbox.Stats{Pending: 1, OldestDueAge: 15 * time.Minute}, outbox.HealthRules{}, nil},
		{"recent failure rate just above 10%", outbox.Stats{Recent: outbox.WindowCounts{Completed: 89, Failed: 11}}, outbox.HealthRules{}, []string{"failure_rate"}},
		{"recent failure rate at 10%", outbox.Stats{Recent: outbox.WindowCounts{Completed: 90, Failed: 10}}, outbox.HealthRules{}, nil},
		{"one recent give-up", outbox.Stats{GivenUp: 1, Recent: outbox.WindowCounts{Completed: 99, GivenUp: 1}}, outbox.HealthRules{}, []string{"given_up"}},
		{"old failures are not a rate", outbox.Stats{Completed: 1, GivenUp: 99}, outbox.HealthRules{}, nil},
		{"51 waiting", outbox.Stats{Pending: 40, Failed: 11, Completed: 1000}, outbox.HealthRules{}, []string{"pending"}},
		{"rules disabled", outbox.Stats{Pending: 100, Stale: 5, Stuck: 2, GivenUp: 5, OldestDueAge: time.Hour,
			Recent: outbox.WindowCounts{GivenUp: 5}},
			outbox.HealthRules{MaxStale: -1, MaxStuck: -1, MaxFailureRate: -1, MaxGivenUp: -1, MaxPending: -1, MaxOldestDue: -1}, nil},
	}
	for _, tc := range tests {
		h := outbox.CheckHealth(tc.stats, tc.rules)
		var got []string
		for _, a := range h.Alerts {
			got = append(got, a.Rule)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") || h.Healthy != (len(tc.want) == 0) {
			t.Errorf("%s: alerts %v healthy %v, want %v", tc.name, got, h.Healthy, tc.want)
		}
	}
}
