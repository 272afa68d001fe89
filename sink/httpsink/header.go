package httpsink

import "strings"

// validFieldName reports whether name is an HTTP field name: a token (RFC 9110 §5.1).
// Go's client would refuse the request at every delivery otherwise.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue reports whether v is an HTTP field value (RFC 9110 §5.5): visible
// characters, spaces and tabs inside, bytes from 0x80 up (obs-text), no control
// characters, no white space at either end.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return strings.Trim(v, " \t") == v
}
