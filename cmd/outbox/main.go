// Command outbox is the transactional outbox's relay daemon and operator tool: migrate,
// relay, stats, ls, show, retry, purge, stale, health. Run 'outbox --help'.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fitiq/outbox/cmd/outbox/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	code := cli.Main(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, StderrIsTerminal: tty})
	stop()
	os.Exit(code)
}
