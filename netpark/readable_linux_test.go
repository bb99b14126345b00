package netpark

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// readable peeks at the socket without taking what is there.
func readable(rc syscall.RawConn) bool {
	n := 0
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	return n > 0
}
