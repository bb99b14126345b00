//go:build !linux

package rawtcp

import (
	"net"
	"syscall"
)

// Wrap is c: the raw system calls of rawtcp_linux.go are Linux's.
func Wrap(c *net.TCPConn) net.Conn { return c }

// Read is one read of fd.
func Read(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), b)
	if err != nil {
		e, _ := err.(syscall.Errno)
		return n, e
	}
	return n, 0
}
