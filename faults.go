package outbox

import (
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MaxErrorLength bounds the error text recorded for a failed attempt (Event.LastError
// and each entry of Event.Errors), in bytes.
const MaxErrorLength = 1024

// CleanError returns err with a text every store can keep: valid UTF-8, without NUL
// or other control characters (newlines and tabs become spaces), cut to
// MaxErrorLength bytes on a rune boundary. err stays in the chain, for errors.Is and
// errors.As. A receiver's answer may hold anything, and a store that refuses the text
// would lose the outcome with it: the processor cleans every failure before recording
// it, and a sink that quotes a server's answer may clean it where it quotes it. A nil
// err stays nil.
func CleanError(err error) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	clean := cleanText(text)
	if clean == text {
		return err
	}
	return &cleanedError{err: err, text: clean}
}

// cleanedError is an error shown with a cleaned text.
type cleanedError struct {
	err  error
	text string
}

func (e *cleanedError) Error() string { return e.text }
func (e *cleanedError) Unwrap() error { return e.err }

// errorText is CleanError's text.
func errorText(err error) string { return CleanError(err).Error() }

// cleanText is s made storable (see CleanError).
func cleanText(s string) string {
	fine := len(s) <= MaxErrorLength && utf8.ValidString(s) &&
		!strings.ContainsFunc(s, unicode.IsControl)
	if fine {
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
