package dashboard

import (
	"fmt"
	"html/template"
	"strings"
	"unicode"
	"unicode/utf8"
)

// hiddenRune reports whether r would act on the text around it, or not show at all,
// instead of showing as a character: the bidirectional overrides, embeddings and
// isolates (U+202A–U+202E, U+2066–U+2069), the direction marks, the zero-width
// characters and the other format characters (Unicode's Cf), and the control
// characters (Cc) but for tab, line feed and carriage return.
func hiddenRune(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	}
	return unicode.In(r, unicode.Cf, unicode.Cc)
}

// visible escapes s for HTML and shows each hidden character (hiddenRune) as its code,
// marked, instead of applying it: an entity ID holding U+202E (RIGHT-TO-LEFT OVERRIDE)
// would otherwise display as another name, with nothing to tell.
func visible(s string) template.HTML {
	if strings.IndexFunc(s, hiddenRune) < 0 {
		return template.HTML(template.HTMLEscapeString(s))
	}
	var b strings.Builder
	start := 0
	for i, r := range s {
		if !hiddenRune(r) {
			continue
		}
		b.WriteString(template.HTMLEscapeString(s[start:i]))
		fmt.Fprintf(&b, `<mark class="ctl" title="invisible character U+%04X, shown instead of applied">\u%04X</mark>`, r, r)
		start = i + utf8.RuneLen(r)
	}
	b.WriteString(template.HTMLEscapeString(s[start:]))
	return template.HTML(b.String())
}

// plain is visible for places that take text only (an attribute, a title): each
// hidden character becomes its code, unmarked.
func plain(s string) string {
	if strings.IndexFunc(s, hiddenRune) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hiddenRune(r) {
			fmt.Fprintf(&b, `\u%04X`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}
