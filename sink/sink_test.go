package sink_test

import (
	"strings"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink"
)

func TestTemplate(t *testing.T) {
	e := outbox.Event{Type: "order.created", EntityID: "e-1", UserID: "u-1"}
	upper := strings.ToUpper
	tests := []struct {
		in, want, err string
	}{
		{"outbox.{type}", "outbox.ORDER.CREATED", ""},
		{"{user_id}/{entity_id}/{type}", "U-1/E-1/ORDER.CREATED", ""},
		{"static", "static", ""},
		{"", "", "empty"},
		{"a.{type", "", "unclosed"},
		{"a.type}", "", "'}' without '{'"},
		{"a.{}", "", "unknown placeholder {}"},
		{"a.{Type}", "", "unknown placeholder {Type}"},
	}
	for _, tt := range tests {
		tmpl, err := sink.ParseTemplate(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTemplate(%q) = %v, want an error about %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.in, err)
			continue
		}
		if got := tmpl.Expand(e, upper); got != tt.want {
			t.Errorf("%q expands to %q, want %q", tt.in, got, tt.want)
		}
		if tmpl.String() != tt.in {
			t.Errorf("String() = %q", tmpl.String())
		}
	}
}
