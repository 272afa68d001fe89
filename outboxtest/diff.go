package outboxtest

import (
	"encoding/json"
	"fmt"
)

// diffJSON describes how two values differ in their JSON form (map keys sorted, empty
// maps omitted as the types' tags say), or returns "" when they do not.
func diffJSON(want, got any) string {
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(got)
	if string(w) != string(g) {
		return fmt.Sprintf("\n got  %s\n want %s", g, w)
	}
	return ""
}
