package httpinbox

import (
	"io"
	"strings"
	"testing"
)

// A second run of the handler reads the whole body again, whether the first read all
// of it, part of it, or none.
func TestRewindableBody(t *testing.T) {
	const body = "0123456789"
	for _, firstRead := range []int{0, 4, len(body)} {
		b := &rewindable{src: io.NopCloser(strings.NewReader(body))}
		first := make([]byte, firstRead)
		if _, err := io.ReadFull(b.reader(), first); err != nil {
			t.Fatal(err)
		}
		for run := 2; run <= 3; run++ {
			got, err := io.ReadAll(b.reader())
			if err != nil || string(got) != body {
				t.Fatalf("after reading %d bytes, run %d read %q, %v; want %q", firstRead, run, got, err, body)
			}
		}
	}
}
