package outboxtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// ServerPort returns a free TCP port on 127.0.0.1 for a server process the test starts
// (a broker, a database) and tells the port on its command line. The port is taken from
// below the kernel's ephemeral range, which is where ports for outgoing connections and
// for listeners on port 0 come from: a port taken from that range could be handed to
// another connection between this check and the server's bind, which happened when two
// copies of the suite ran at once. Only another test choosing the same port the same
// way can still collide, and the range has thousands.
func ServerPort(t testing.TB) int {
	t.Helper()
	low, high := 10_000, ephemeralStart()
	for range 100 {
		port := low + rand.IntN(high-low)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use: try another
		}
		ln.Close()
		return port
	}
	t.Fatalf("no free port between %d and %d after 100 tries", low, high)
	return 0
}

// ephemeralStart is the first port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range), or 32768, the usual one, when it cannot be
// read or leaves too little room below it.
func ephemeralStart() int {
	var lo, hi int
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		_, err = fmt.Sscan(string(b), &lo, &hi)
	}
	if err != nil || lo < 20_000 {
		return 32_768
	}
	return lo
}
