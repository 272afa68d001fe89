package outbox

import (
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxErrorLength bounds the error text recorded for a failed attempt (Event.LastError
// and each entry of Event.Errors), in bytes.
const MaxErrorLength = 1024

// errorText is err's text as a store can always keep it: valid UTF-8, without NUL or
// other control characters (newlines and tabs become spaces), cut to MaxErrorLength
// bytes on a rune boundary. A receiver's error body may hold anything, and a store
// that refuses the text would lose the outcome with it.
func errorText(err error) string {
	s := err.Error()
	clean := func(s string) bool {
		for _, r := range s {
			if r == utf8.RuneError || unicode.IsControl(r) {
				return false
			}
		}
		return true
	}
	if len(s) <= MaxErrorLength && clean(s) {
		return s
	}
	var b strings.Builder
	const ellipsis = "…"
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			r = ' '
		case unicode.IsControl(r):
			r = '\uFFFD'
		}
		if b.Len()+utf8.RuneLen(r) > MaxErrorLength-len(ellipsis) {
			b.WriteString(ellipsis)
			break
		}
		b.WriteRune(r)
	}
	return b.String()
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

// maxSuspects bounds how many events' suspected failures a processor remembers; past
// it, it forgets them all, which only delays a verdict.
const maxSuspects = 4096

// suspicion decides whose fault a suspected failure is (DestinationError.Suspected).
// An event that fails so is the destination's case until a delivery that started after
// that failure succeeds: then, if the event fails alike again, the destination is
// taking other events, and the failure is the event's own.
type suspicion struct {
	mu       sync.Mutex
	started  uint64            // deliveries started so far
	lastOK   uint64            // the start number of the latest delivery that succeeded
	failedAt map[string]uint64 // event ID → deliveries started when it last failed suspected
}

// start numbers a delivery that is starting.
func (s *suspicion) start() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started++
	return s.started
}

// succeeded records that the delivery numbered n, of event id, succeeded.
func (s *suspicion) succeeded(n uint64, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastOK = max(s.lastOK, n)
	delete(s.failedAt, id)
}

// eventsFault records a suspected failure of event id and reports whether it is the
// event's own: it failed so before, and a delivery started since then succeeded.
func (s *suspicion) eventsFault(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.failedAt[id]; ok && s.lastOK > prev {
		delete(s.failedAt, id)
		return true
	}
	if s.failedAt == nil || len(s.failedAt) >= maxSuspects {
		s.failedAt = map[string]uint64{}
	}
	s.failedAt[id] = s.started
	return false
}
