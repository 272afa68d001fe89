package outbox

import (
	"fmt"
	"math"
	"time"
)

// The default alert thresholds.
const (
	DefaultMaxStale       = 0
	DefaultMaxFailureRate = 0.10
	DefaultMaxPending     = 50
)

// HealthRules are the alert thresholds. An alert fires when a value exceeds its
// threshold.
type HealthRules struct {
	// MaxStale is how many stale events are tolerated. Defaults to 0 (any stale event alerts);
	// negative disables the rule.
	MaxStale int
	// MaxFailureRate is the tolerated share of settled events that failed (retrying or
	// given up), from 0 to 1. Defaults to 0.10; negative disables the rule.
	MaxFailureRate float64
	// MaxPending is how many pending or retrying events are tolerated. Defaults to 50;
	// negative disables the rule.
	MaxPending int
}

func (r HealthRules) withDefaults() HealthRules {
	if r.MaxFailureRate == 0 {
		r.MaxFailureRate = DefaultMaxFailureRate
	}
	if r.MaxPending == 0 {
		r.MaxPending = DefaultMaxPending
	}
	return r
}

// Validate reports a threshold that cannot work: a failure rate that is not a number
// or is above 1 (a NaN would silently turn the rule off).
func (r HealthRules) Validate() error {
	if math.IsNaN(r.MaxFailureRate) || r.MaxFailureRate > 1 {
		return fieldError("Config.Health.MaxFailureRate", fmt.Sprintf("must be a share from 0 to 1 (negative disables), got %g", r.MaxFailureRate))
	}
	return nil
}

// Alert is one rule that holds.
type Alert struct {
	Rule      string  `json:"rule"` // "stale", "failure_rate" or "pending"
	Message   string  `json:"message"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
}

// Health is the outcome of checking Stats against HealthRules.
type Health struct {
	Healthy bool    `json:"healthy"`
	Alerts  []Alert `json:"alerts,omitempty"`
	Stats   Stats   `json:"stats"`
}

// CheckHealth applies the rules (zero fields take their defaults) to s.
func CheckHealth(s Stats, rules HealthRules) Health {
	r := rules.withDefaults()
	h := Health{Stats: s}
	if r.MaxStale >= 0 && s.Stale > r.MaxStale {
		h.Alerts = append(h.Alerts, Alert{Rule: "stale", Value: float64(s.Stale), Threshold: float64(r.MaxStale),
			Message: fmt.Sprintf("%d stale events (due for too long; oldest waiting %s)", s.Stale, s.OldestPendingAge.Round(time.Second))})
	}
	if fr := 1 - s.SuccessRate(); r.MaxFailureRate >= 0 && fr > r.MaxFailureRate {
		h.Alerts = append(h.Alerts, Alert{Rule: "failure_rate", Value: fr, Threshold: r.MaxFailureRate,
			Message: fmt.Sprintf("failure rate %.1f%% is above %.1f%% (%d retrying, %d given up)", fr*100, r.MaxFailureRate*100, s.Failed, s.GivenUp)})
	}
	// A paused type's backlog waits by an operator's choice: it is reported (Stats.Paused)
	// but raises no alert.
	if waiting := s.Pending + s.Failed - s.PausedWaiting(); r.MaxPending >= 0 && waiting > r.MaxPending {
		h.Alerts = append(h.Alerts, Alert{Rule: "pending", Value: float64(waiting), Threshold: float64(r.MaxPending),
			Message: fmt.Sprintf("%d events waiting for delivery, above %d", waiting, r.MaxPending)})
	}
	h.Healthy = len(h.Alerts) == 0
	return h
}
