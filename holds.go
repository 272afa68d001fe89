package outbox

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// targetHolds is the per-target side of the breaker: which targets are held, and
// which event types were found to go to each. A type is learned from the failures
// themselves, so a sink needs no way to tell where an event would go.
type targetHolds struct {
	cfg BreakerConfig

	mu      sync.Mutex
	held    map[string]*targetHold
	targets map[string]string // event type → the held target it failed at
}

type targetHold struct {
	TargetHold
	cooldown time.Duration
	probing  bool
}

func newTargetHolds(cfg BreakerConfig) *targetHolds {
	return &targetHolds{cfg: cfg, held: map[string]*targetHold{}, targets: map[string]string{}}
}

// skipTypes lists the event types a claim at now should leave out: those of held
// targets, unless a target is due for a probe.
func (h *targetHolds) skipTypes(now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var skip []string
	for typ, target := range h.targets {
		if th := h.held[target]; th.probing || now.Before(th.NextProbe) {
			skip = append(skip, typ)
		}
	}
	slices.Sort(skip)
	return skip
}

// admit says whether an event of eventType may be delivered now: yes when its type
// goes to no held target; otherwise only as the target's one probe once it is due.
func (h *targetHolds) admit(eventType string, now time.Time) (ok, probe bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	target, found := h.targets[eventType]
	if !found {
		return true, false
	}
	th := h.held[target]
	if th.probing || now.Before(th.NextProbe) {
		return false, false
	}
	th.probing = true
	return true, true
}

// fail records a target fault of an event of eventType. It reports whether the
// target became held now.
func (h *targetHolds) fail(now time.Time, eventType, target, reason, errText string) (newly bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	th, found := h.held[target]
	if !found {
		th = &targetHold{TargetHold: TargetHold{Target: target, Since: now}, cooldown: h.cfg.Cooldown}
		th.NextProbe = now.Add(th.cooldown)
		h.held[target] = th
		newly = true
	} else if th.probing {
		// The probe failed alike: wait twice as long before the next.
		th.probing = false
		th.cooldown = min(2*th.cooldown, h.cfg.MaxCooldown)
		th.NextProbe = now.Add(th.cooldown)
	}
	th.Reason, th.Error = reason, errText
	if h.targets[eventType] != target {
		h.targets[eventType] = target
		th.Types = append(th.Types, eventType)
		slices.Sort(th.Types)
	}
	return newly
}

// answered records that an event of eventType got an answer from its target that is
// not the target's fault (delivered, or a failure about the event): the target it was
// held at, if any, is released. It returns that target and the reason it was held for.
func (h *targetHolds) answered(eventType string) (target, reason string, released bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	target, found := h.targets[eventType]
	if !found {
		return "", "", false
	}
	th := h.held[target]
	for _, typ := range th.Types {
		delete(h.targets, typ)
	}
	delete(h.held, target)
	return target, th.Reason, true
}

// endProbe lets another probe through when a probe of eventType's target was not
// attempted after all (the processor was stopping).
func (h *targetHolds) endProbe(eventType string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if target, found := h.targets[eventType]; found {
		h.held[target].probing = false
	}
}

// nextProbe is the earliest time a held target is due for a probe; zero when none is.
func (h *targetHolds) nextProbe() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var next time.Time
	for _, th := range h.held {
		if !th.probing && (next.IsZero() || th.NextProbe.Before(next)) {
			next = th.NextProbe
		}
	}
	return next
}

func (h *targetHolds) state() []TargetHold {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]TargetHold, 0, len(h.held))
	for _, th := range h.held {
		t := th.TargetHold
		t.Types = slices.Clone(t.Types)
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b TargetHold) int { return strings.Compare(a.Target, b.Target) })
	return out
}
