//go:build !linux

package sip

import "net"

// rawTCP is c: the raw system calls of rawconn_linux.go are Linux's.
func rawTCP(c *net.TCPConn) net.Conn { return c }
