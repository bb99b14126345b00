//go:build unix

package procs

import (
	"time"

	"golang.org/x/sys/unix"
)

const supported = true

// cpuTime is the process's user and system CPU time, all threads.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
