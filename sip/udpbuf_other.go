//go:build !linux

package sip

import "net"

// setReadBuffer asks for n bytes of receive buffer on c; what the kernel
// granted is not known here (0).
func setReadBuffer(c *net.UDPConn, n int) int {
	_ = c.SetReadBuffer(n)
	return 0
}
