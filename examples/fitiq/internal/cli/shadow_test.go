package cli

import (
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox/sqlite"
)

// The first phase of adopting the outbox, over the demo's workload: the direct path
// syncs every entry, and the outbox, run in shadow beside it, finds each of its events
// at the backend. Lose one entry at the backend after the direct path ran, and the
// shadow run names it.
func TestShadowRunOverTheDemoWorkload(t *testing.T) {
	cases := []struct {
		name string
		drop bool
		code int
		want string
	}{
		{"agrees with the direct path", false, exitOK, " 0 differences"},
		{"names a dropped entry", true, exitFail, " 1 difference\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			d := &demo{cfg: demoConfig{entries: 60, seed: 11, pace: time.Microsecond, timeout: time.Minute}, out: io.Discard}
			t.Cleanup(func() {
				if err := d.close(); err != nil {
					t.Error(err)
				}
			})
			if err := d.setup(ctx); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(d.cfg.seed, d.cfg.seed^0x5eed))
			if err := d.logAll(ctx, d.plan(rng), rng); err != nil {
				t.Fatal(err)
			}
			if tc.drop {
				afterDirectSync = func() {
					db, err := sqlite.Open(filepath.Join(d.dir, "backend.db"), sqlite.OpenConfig{})
					if err != nil {
						t.Fatal(err)
					}
					defer db.Close()
					if _, err := db.Exec(`DELETE FROM records WHERE backend_id = (SELECT min(backend_id) FROM records WHERE kind = 'activity-snapshots')`); err != nil {
						t.Fatal(err)
					}
				}
				t.Cleanup(func() { afterDirectSync = nil })
			}
			r := run(t, "sync", "--shadow", "--db", filepath.Join(d.dir, "client.db"), "--api", d.apiURL,
				"--token", d.token, "--user", d.user)
			if r.code != tc.code || !strings.Contains(r.out, "direct path: 60 entries sent") || !strings.Contains(r.out, tc.want) {
				t.Fatalf("fitiq sync --shadow: exit %d, want %d with %q\n%s%s", r.code, tc.code, tc.want, r.out, r.errOut)
			}
			if tc.drop && !strings.Contains(r.out, "activitySnapshot ") {
				t.Fatalf("the difference does not name the dropped activity snapshot:\n%s", r.out)
			}
			t.Logf("%s", r.out)
		})
	}
}
