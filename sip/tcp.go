package sip

import (
	"net"
	"net/netip"
	"time"

	"clb/rawtcp"
)

// streamNetwork is what a stream transport runs on: how it listens and how
// it opens a connection. Framing, the connection table and the timeouts are
// streamTransport's; TLS (tls.go) is tcpNetwork's connections wrapped by
// tls.Server and tls.Client.
type streamNetwork interface {
	listen(addr netip.AddrPort) (net.Listener, error)
	dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error)
}

// tcpNetwork is plain TCP.
type tcpNetwork struct{}

func (tcpNetwork) listen(addr netip.AddrPort) (net.Listener, error) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err // not a nil *TCPListener in a non-nil net.Listener
	}
	return rawtcp.Listener{TCPListener: ln}, nil
}

func (tcpNetwork) dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return rawtcp.Wrap(c.(*net.TCPConn)), nil
}
