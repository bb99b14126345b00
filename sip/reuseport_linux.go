package sip

import (
	"runtime"
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

// maxReaders bounds the default number of readers of a UDP listener: past
// a few, more sockets only split the same traffic finer.
const maxReaders = 8

// defaultReaders is ServerOptions.Readers' default: a reader per CPU clb
// may use, up to maxReaders.
func defaultReaders() int { return min(runtime.GOMAXPROCS(0), maxReaders) }
