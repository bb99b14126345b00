package netparktest

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Cork sets (on 1) or clears (on 0) TCP_CORK on conn's socket, under a
// *tls.Conn too: writes wait in the kernel, to leave as one segment when
// it is cleared, as a pipelining client's may arrive.
func Cork(t testing.TB, conn net.Conn, on int) {
	t.Helper()
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = w.NetConn()
	}
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, on) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}
