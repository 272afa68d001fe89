package sqlite

import (
	"encoding/json"
	"maps"
	"testing"
	"unicode/utf8"
)

// FuzzLogMetadata: the log's metadata encoder writes JSON that decodes to the map it
// was given, and, for text without the characters json.Marshal escapes for HTML's
// sake, the very bytes json.Marshal writes.
func FuzzLogMetadata(f *testing.F) {
	for _, seed := range [][2]string{
		{"source", "manual_entry"},
		{"quote\"back\\slash", "new\nline\ttab\rreturn"},
		{"ctl\x01\x1f\x7f", "ünïcödé ✓ 😀"},
		{"", ""},
		{"html", "<a href='x'>&amp;</a>\u2028\u2029"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, k, v string) {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			t.Skip("Prepare refuses invalid UTF-8")
		}
		m := map[string]string{k: v, "app_version": "1.0.0"}
		got := encodeLogMetadata(m)
		var back map[string]string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Fatalf("encoded %q: %v", got, err)
		}
		if !maps.Equal(back, m) {
			t.Fatalf("encoded %v as %q, decoded %v", m, got, back)
		}
		want, _ := json.Marshal(m)
		plain := true
		for _, s := range []string{k, v} {
			for _, r := range s {
				plain = plain && r != '<' && r != '>' && r != '&' && r != '\u2028' && r != '\u2029' && r != '\b' && r != '\f'
			}
		}
		if plain && got != string(want) {
			t.Fatalf("encoded %v as %q, json.Marshal writes %q", m, got, want)
		}
	})
}
