//go:build !linux

package rawtcp

import "net"

// Wrap is c: the raw system calls of rawtcp_linux.go are Linux's.
func Wrap(c *net.TCPConn) net.Conn { return c }
