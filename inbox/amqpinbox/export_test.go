package amqpinbox

import (
	"context"
	"time"
)

// SetWait replaces how c waits before a requeue; wait may call Sleep to wait for real.
func SetWait(c *Consumer, wait func(ctx context.Context, d time.Duration)) { c.wait = wait }

// Sleep is the wait a Consumer does by default.
var Sleep = sleep
