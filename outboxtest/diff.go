package outboxtest

import (
	"encoding/json"
	"fmt"

	"github.com/fitiq/outbox"
)

// diffJSON describes how two values differ in their JSON form (map keys sorted), or
// returns "" when they do not.
func diffJSON(want, got any) string {
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(got)
	if string(w) != string(g) {
		return fmt.Sprintf("\n got  %s\n want %s", g, w)
	}
	return ""
}

func diffEvents(want, got outbox.Event) string { return diffJSON(want, got) }

func diffStats(want, got outbox.Stats) string {
	if len(want.ByType) == 0 && len(got.ByType) == 0 {
		want.ByType, got.ByType = nil, nil
	}
	return diffJSON(want, got)
}
