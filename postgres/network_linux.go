package postgres

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT: the kernel fails the connection once data
// it sent has gone unacknowledged for d.
func setUserTimeout(fd uintptr, d time.Duration) error {
	err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	if errors.Is(err, unix.ENOPROTOOPT) {
		return nil // an old kernel: keepalive still applies
	}
	return err
}
