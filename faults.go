package outbox

import (
	"strings"
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
