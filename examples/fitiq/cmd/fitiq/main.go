// Command fitiq is the seed's application on the command line: log health entries into
// a local SQLite file, sync them to the remote API through the outbox, serve that API,
// or run the whole thing end to end with `fitiq demo`. See `fitiq help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fitiq/outbox/examples/fitiq/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
