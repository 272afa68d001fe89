package redissink_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestMain quiets go-redis, once for the whole run: its client logs every connection a
// fault costs it (a killed server, a refused password, a cut proxy), which many tests
// here cause on purpose. redis.SetLogger sets a process-wide variable; set inside tests,
// it kept them from running in parallel.
func TestMain(m *testing.M) {
	redis.SetLogger(quiet{})
	os.Exit(m.Run())
}

// quiet drops go-redis's log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
