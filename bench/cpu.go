package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuSnap is the CPU time spent so far by this process and by the server's backends
// connected to the benchmark's database, for CPU per transaction or event. The
// backends' times come from /proc (procCPU), so they are known only when PostgreSQL
// runs on this machine; the server's shared processes (WAL writer, checkpointer) are
// not counted.
type cpuSnap struct {
	self     time.Duration
	backends map[int]time.Duration
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTick = 10 * time.Millisecond

func snapCPU(ctx context.Context, pool *pgxpool.Pool) cpuSnap {
	s := cpuSnap{backends: map[int]time.Duration{}}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`)
	if err != nil {
		return s
	}
	var pids []int
	for rows.Next() {
		var pid int32
		if rows.Scan(&pid) == nil {
			pids = append(pids, int(pid))
		}
	}
	rows.Close()
	for _, pid := range pids {
		if d, ok := procCPU(pid); ok {
			s.backends[pid] = d
		}
	}
	return s
}

// procCPU is the time a process has spent on a CPU: from /proc/<pid>/schedstat, in
// nanoseconds, or where the kernel keeps no schedstat, utime+stime from
// /proc/<pid>/stat, in ticks of 10 ms.
func procCPU(pid int) (time.Duration, bool) {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return time.Duration(ns), true
			}
		}
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * clockTick, true
}

// since returns the CPU this process and the backends spent between s0 and s; a
// backend that appeared meanwhile counts from zero.
func (s cpuSnap) since(s0 cpuSnap) (self, server time.Duration) {
	for pid, d := range s.backends {
		server += d - s0.backends[pid]
	}
	return s.self - s0.self, server
}

// cpuMetrics are the CPU µs per unit (transaction or event) of this process and of
// the server's backends.
func cpuMetrics(s0, s1 cpuSnap, n int) []metric {
	self, server := s1.since(s0)
	n = max(n, 1)
	return []metric{
		{"client-cpu-us/op", float64(self.Microseconds()) / float64(n)},
		{"server-cpu-us/op", float64(server.Microseconds()) / float64(n)},
	}
}
