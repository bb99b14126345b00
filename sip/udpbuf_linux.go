package sip

import (
	"net"

	"golang.org/x/sys/unix"
)

// setReadBuffer asks for n bytes of receive buffer on c, past
// net.core.rmem_max when clb may (SO_RCVBUFFORCE: root or CAP_NET_ADMIN),
// and returns what the kernel granted, in the units asked (it reports twice
// that, its bookkeeping included), 0 if unknown.
func setReadBuffer(c *net.UDPConn, n int) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got / 2
}
