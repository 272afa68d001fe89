package outbox

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// The default alert thresholds. docs/alerts-and-operations.md describes each rule.
const (
	DefaultMaxStale       = 0
	DefaultMaxStuck       = 0
	DefaultMaxFailureRate = 0.10
	DefaultMaxGivenUp     = 0
	DefaultMaxPending     = 50
	DefaultMaxOldestDue   = 15 * time.Minute
	DefaultHealthWindow   = 15 * time.Minute
)

// HealthRules are the alert thresholds. An alert fires when a value exceeds its
// threshold. Every rule can be disabled with a negative threshold.
type HealthRules struct {
	// MaxStale is how many stale events are tolerated. Defaults to DefaultMaxStale (any
	// stale event alerts).
	MaxStale int
	// MaxStuck is how many stuck events (processing under an expired lease: their
	// processor died) are tolerated. Defaults to DefaultMaxStuck (any stuck event alerts).
	MaxStuck int
	// MaxFailureRate is the tolerated share of the outcomes within Window that are
	// failures (retrying or given up), from 0 to 1. Defaults to DefaultMaxFailureRate.
	MaxFailureRate float64
	// MaxGivenUp is how many events given up within Window are tolerated. Defaults to
	// DefaultMaxGivenUp
	// (any event given up alerts, for one Window).
	MaxGivenUp int
	// MaxPending is how many pending or retrying events are tolerated. Defaults to
	// DefaultMaxPending.
	MaxPending int
	// MaxOldestDue is how long an event may have been due (Stats.OldestDueAge) before
	// it alerts: whatever the store, it grows when no processor runs. Defaults to
	// DefaultMaxOldestDue.
	MaxOldestDue time.Duration
	// Window is how far back the failure-rate and given-up rules look. Defaults to
	// DefaultHealthWindow.
	Window time.Duration
}

func (r HealthRules) withDefaults() HealthRules {
	if r.MaxFailureRate == 0 {
		r.MaxFailureRate = DefaultMaxFailureRate
	}
	if r.MaxPending == 0 {
		r.MaxPending = DefaultMaxPending
	}
	if r.MaxOldestDue == 0 {
		r.MaxOldestDue = DefaultMaxOldestDue
	}
	if r.Window <= 0 {
		r.Window = DefaultHealthWindow
	}
	return r
}

// Validate reports a threshold that cannot work: a failure rate that is not a number
// or is above 1 (a NaN would silently turn the rule off), a negative window.
func (r HealthRules) Validate() error {
	if math.IsNaN(r.MaxFailureRate) || r.MaxFailureRate > 1 {
		return fieldError("MaxFailureRate", fmt.Sprintf("must be a share from 0 to 1 (negative disables), got %g", r.MaxFailureRate))
	}
	if r.Window < 0 {
		return fieldError("Window", fmt.Sprintf("must not be negative, got %s", r.Window))
	}
	return nil
}

// The rules' names, as Alert.Rule reports them.
const (
	RuleStuck       = "stuck"
	RuleStale       = "stale"
	RuleOldestDue   = "oldest_due"
	RuleFailureRate = "failure_rate"
	RuleGivenUp     = "given_up"
	RulePending     = "pending"
	// RuleCircuitOpen fires only from Processor.Health: its circuit breaker is open,
	// the destination being at fault (unreachable, credentials rejected, …); the
	// message names the reason.
	RuleCircuitOpen = "circuit_open"
	// RuleTargetHeld fires only from Processor.Health, once for each target of the
	// destination held on its own (a missing topic, say); the message names it.
	RuleTargetHeld = "target_held"
)

// Alert is one rule that holds.
type Alert struct {
	Rule      string  `json:"rule"` // one of the Rule… names
	Message   string  `json:"message"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
}

// Health is the outcome of checking Stats against HealthRules.
type Health struct {
	Healthy bool    `json:"healthy"`
	Alerts  []Alert `json:"alerts,omitempty"`
	Stats   Stats   `json:"stats"`
	// Breaker is the processor's circuit breaker (Processor.Health only).
	Breaker *BreakerState `json:"breaker,omitempty"`
}

// StatsQuery returns the query whose Stats the rules need: Recent over r.Window.
func (r HealthRules) StatsQuery(userID string, now time.Time, staleAfter time.Duration) StatsQuery {
	return StatsQuery{UserID: userID, Now: now, StaleAfter: staleAfter, Window: r.withDefaults().Window}
}

// CheckHealth applies the rules (zero fields take their defaults) to s. The failure
// rate and given-up rules read s.Recent, so s should come from a StatsQuery with a
// Window (see HealthRules.StatsQuery); without one they find no outcome and stay quiet.
func CheckHealth(s Stats, rules HealthRules) Health {
	r := rules.withDefaults()
	h := Health{Stats: s}
	window := r.Window
	if s.Recent.Window > 0 {
		window = s.Recent.Window // what the counts were taken over
	}
	add := func(rule string, value, threshold float64, msg string, args ...any) {
		h.Alerts = append(h.Alerts, Alert{Rule: rule, Value: value, Threshold: threshold, Message: fmt.Sprintf(msg, args...)})
	}
	if r.MaxStuck >= 0 && s.Stuck > r.MaxStuck {
		add(RuleStuck, float64(s.Stuck), float64(r.MaxStuck),
			"%s stuck in processing under an expired lease (their processor is gone and none has taken them over)", countEvents(s.Stuck))
	}
	if r.MaxStale >= 0 && s.Stale > r.MaxStale {
		add(RuleStale, float64(s.Stale), float64(r.MaxStale),
			"%s stale (due for too long; oldest waiting %s)", countEvents(s.Stale), readable(s.OldestPendingAge))
	}
	if r.MaxOldestDue >= 0 && s.OldestDueAge > r.MaxOldestDue {
		add(RuleOldestDue, s.OldestDueAge.Seconds(), r.MaxOldestDue.Seconds(),
			"the oldest due event has been due for %s, over %s: is a processor running?", readable(s.OldestDueAge), readable(r.MaxOldestDue))
	}
	if fr := s.Recent.FailureRate(); r.MaxFailureRate >= 0 && fr > r.MaxFailureRate {
		add(RuleFailureRate, fr, r.MaxFailureRate,
			"failure rate %.1f%% over the last %s is above %.1f%% (%d completed, %d retrying, %d given up)",
			fr*100, readable(window), r.MaxFailureRate*100, s.Recent.Completed, s.Recent.Failed, s.Recent.GivenUp)
	}
	if r.MaxGivenUp >= 0 && s.Recent.GivenUp > r.MaxGivenUp {
		add(RuleGivenUp, float64(s.Recent.GivenUp), float64(r.MaxGivenUp),
			"%s given up in the last %s (%d given up in all; see 'outbox ls --status given-up')", countEvents(s.Recent.GivenUp), readable(window), s.GivenUp)
	}
	// A paused type's backlog waits by an operator's choice: it is reported (Stats.Paused)
	// but raises no alert.
	if waiting := s.Pending + s.Failed - s.PausedWaiting(); r.MaxPending >= 0 && waiting > r.MaxPending {
		add(RulePending, float64(waiting), float64(r.MaxPending), "%s waiting for delivery, above %d", countEvents(waiting), r.MaxPending)
	}
	h.Healthy = len(h.Alerts) == 0
	return h
}

// countEvents counts events in words: "1 event", "3 events".
func countEvents(n int) string {
	if n == 1 {
		return "1 event"
	}
	return fmt.Sprintf("%d events", n)
}

// readable writes a duration as people read it, to the second and without zero units:
// "15m", "1h30m", "42s".
func readable(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
