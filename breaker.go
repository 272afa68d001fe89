package outbox

import (
	"fmt"
	"sync"
	"time"
)

// The circuit breaker's defaults.
const (
	DefaultBreakerThreshold   = 5
	DefaultBreakerCooldown    = time.Second
	DefaultBreakerMaxCooldown = 30 * time.Second
)

// BreakerConfig tunes the processor's circuit breaker, which keeps a fault of the
// destination (an outage, rejected credentials, a wrong URL; see DestinationError) from
// spending the events' attempts. A delivery that fails as the destination's fault is not
// counted against its event: the event is handed back, due as before. After Threshold
// such failures in a row the circuit opens: the processor delivers nothing for
// Cooldown, then probes with one event. A probe the destination answers (success, or a
// failure that is about the event) closes the circuit; one that fails as the
// destination's again keeps it open for twice as long, up to MaxCooldown.
//
// A fault of one target (a topic or queue: DestinationError.Target) holds only the
// events of the types that failed there, on a schedule of its own with the same
// Cooldown and MaxCooldown; events of other types go on.
type BreakerConfig struct {
	// Threshold is how many destination faults in a row open the circuit. Defaults
	// to DefaultBreakerThreshold; negative disables the breaker, and destination faults
	// then count as ordinary failures (retried under the RetryPolicy, given up when
	// attempts run out or when marked Permanent).
	Threshold int
	// Cooldown is how long the circuit stays open before the first probe. Defaults to
	// DefaultBreakerCooldown.
	Cooldown time.Duration
	// MaxCooldown bounds the doubling of Cooldown after failed probes. Defaults to
	// DefaultBreakerMaxCooldown.
	MaxCooldown time.Duration
	// IsUnavailable tells a fault of the destination from a failure of the event, for
	// errors that are not a DestinationError. Defaults to IsUnavailable (dial errors).
	IsUnavailable func(error) bool
}

func (b BreakerConfig) withDefaults() BreakerConfig {
	if b.Threshold == 0 {
		b.Threshold = DefaultBreakerThreshold
	}
	if b.Cooldown == 0 {
		b.Cooldown = DefaultBreakerCooldown
	}
	if b.MaxCooldown == 0 {
		b.MaxCooldown = max(DefaultBreakerMaxCooldown, b.Cooldown)
	}
	if b.IsUnavailable == nil {
		b.IsUnavailable = IsUnavailable
	}
	return b
}

// Validate reports the first field of b that cannot work, naming it.
func (b BreakerConfig) Validate() error {
	if b.Cooldown < 0 {
		return fieldError("Cooldown", fmt.Sprintf("must be positive, got %s", b.Cooldown))
	}
	if b.MaxCooldown < 0 || (b.MaxCooldown > 0 && b.MaxCooldown < b.Cooldown) {
		return fieldError("MaxCooldown", fmt.Sprintf("must be at least Cooldown (%s), got %s", b.Cooldown, b.MaxCooldown))
	}
	return nil
}

// BreakerState is what Processor.Breaker reports.
type BreakerState struct {
	// Open is true while deliveries are held back: the destination is at fault.
	Open bool `json:"open"`
	// Reason names the fault that opened the circuit, or that the failures in a row so
	// far share (DestinationError.Reason); empty when none.
	Reason string `json:"reason,omitempty"`
	// Error is the last such failure's error text.
	Error string `json:"error,omitempty"`
	// OpenedAt is when the circuit last opened; zero if it never did.
	OpenedAt time.Time `json:"opened_at,omitzero"`
	// NextProbe is when an open circuit lets one event through to probe.
	NextProbe time.Time `json:"next_probe,omitzero"`
	// Unavailable counts the destination faults in a row so far.
	Unavailable int `json:"unavailable"`
	// Opened counts how often the circuit has opened since the processor was made.
	Opened int `json:"opened"`
	// Targets lists the targets held on their own (DestinationError.Target), by name.
	Targets []TargetHold `json:"targets,omitempty"`
}

// breaker is the state behind BreakerConfig. Its clock is the processor's.
type breaker struct {
	cfg BreakerConfig

	mu          sync.Mutex
	consecutive int
	open        bool
	probing     bool
	openedAt    time.Time
	until       time.Time
	cooldown    time.Duration
	opened      int
	reason      string
	lastErr     string
}

func newBreaker(cfg BreakerConfig) *breaker { return &breaker{cfg: cfg} }

func (b *breaker) enabled() bool { return b.cfg.Threshold > 0 }

// admit says how many events a claim at now may take: limit when the circuit is
// closed, 1 for the one probe of an open circuit whose cooldown is over, 0 otherwise.
// A caller admitted to probe must report the probe's outcome with record.
func (b *breaker) admit(now time.Time, limit int) (n int, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return limit, false
	case b.probing || now.Before(b.until):
		return 0, false
	default:
		b.probing = true
		return 1, true
	}
}

// endProbe lets another probe through when a probe claimed nothing.
func (b *breaker) endProbe() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// holding reports whether deliveries should not start now: the circuit is open and
// not probing.
func (b *breaker) holding() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open && !b.probing
}

// record takes the outcome of one delivery: a destination fault (with its reason and
// error text) or answered. It reports whether the circuit changed (opened or closed),
// and the reason of the fault it opened or closed for.
func (b *breaker) record(now time.Time, unavailable bool, reason, errText string) (changed, open bool, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !unavailable {
		b.consecutive = 0
		why = b.reason
		b.reason, b.lastErr = "", ""
		if b.open {
			b.open, b.probing = false, false
			return true, false, why
		}
		return false, false, why
	}
	b.consecutive++
	b.reason, b.lastErr = reason, errText
	switch {
	case b.open && b.probing:
		b.probing = false
		b.cooldown = min(2*b.cooldown, b.cfg.MaxCooldown)
		b.until = now.Add(b.cooldown)
		return false, true, reason
	case !b.open && b.consecutive >= b.cfg.Threshold:
		b.open = true
		b.opened++
		b.openedAt = now
		b.cooldown = b.cfg.Cooldown
		b.until = now.Add(b.cooldown)
		return true, true, reason
	}
	return false, b.open, reason
}

// nextProbe is when an open circuit admits a probe; zero when closed, or while a probe
// is out (its outcome sets the next one), so that idle loops do not spin on it.
func (b *breaker) nextProbe() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open || b.probing {
		return time.Time{}
	}
	return b.until
}

func (b *breaker) state() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerState{Open: b.open, OpenedAt: b.openedAt, Unavailable: b.consecutive, Opened: b.opened,
		Reason: b.reason, Error: b.lastErr}
	if b.open {
		s.NextProbe = b.until
	}
	return s
}

// TargetHold is one target of the destination whose deliveries are held (see
// DestinationError.Target): its events wait, unattempted, while the processor probes
// with one of them now and then.
type TargetHold struct {
	Target string    `json:"target"`
	Reason string    `json:"reason"`
	Error  string    `json:"error,omitempty"`
	Since  time.Time `json:"since"`
	// NextProbe is when one event bound there is let through to probe.
	NextProbe time.Time `json:"next_probe"`
	// Types are the event types found to go there; their events are not claimed while
	// the target is held.
	Types []string `json:"types"`
}
