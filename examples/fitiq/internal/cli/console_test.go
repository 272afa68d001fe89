package cli

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// At its default level, fitiq sync writes the console lines of a good sync: the batch,
// each event processed, what was uploaded, the backend ID it got, and the success.
func TestSyncLogsTheGoodSyncLinesByDefault(t *testing.T) {
	t.Parallel()
	url, token := startBackend(t, "me")
	client := []string{"--db", filepath.Join(t.TempDir(), "client.db"), "--user", "me", "--api", url, "--token", token}
	if r := run(t, append([]string{"log", "weight", "72.5"}, client...)...); r.code != exitOK {
		t.Fatalf("log: %d %s", r.code, r.errOut)
	}
	r := run(t, append([]string{"sync"}, client...)...)
	if r.code != exitOK {
		t.Fatalf("sync: exit %d\n%s", r.code, r.errOut)
	}
	for _, want := range []string{
		`level=INFO msg="processing batch" events=1`,
		`level=INFO msg="processing event" .*type=progressEntry attempt=1`,
		`level=INFO msg="uploading progress entry" .*type=weight`,
		`level=INFO msg="progress entry synced" .*backend_id=\S+`,
		`level=INFO msg="successfully processed event" .*type=progressEntry`,
	} {
		if !regexp.MustCompile(want).MatchString(r.errOut) {
			t.Errorf("the sync's console lacks %s:\n%s", want, r.errOut)
		}
	}
	if strings.Contains(r.errOut, "level=DEBUG") {
		t.Errorf("debug lines at the default level:\n%s", r.errOut)
	}
	if q := run(t, append([]string{"sync", "-q"}, client...)...); q.errOut != "" {
		t.Errorf("sync -q logged:\n%s", q.errOut)
	}
}
