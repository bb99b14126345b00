package sip

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several sockets bind one UDP address (SO_REUSEPORT), the
// kernel spreading datagrams among them by the peer's address. Only
// processes of the same user can join such a group.
func reusePort(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
