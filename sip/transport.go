package sip

import (
	"net/netip"
)

// transport is one of clb's SIP transports, named by its Via token: "udp"
// "tcp" and "tls" now, "ws" and "wss" later. It owns its listeners and, for
// a stream transport, its connections; the Server keeps one per name and
// routes a message to the transport its destination names, so the proxy
// knows transports only by name (sender) and connections only as conn.
//
// Adding a transport is one more implementation in Server.transports;
// a stream transport over another network (TLS: tls.go) is a
// streamTransport with another streamNetwork.
type transport interface {
	// name is the transport's Via and Record-Route token, lower case.
	name() string
	// listen binds one more listener at addr.
	listen(addr netip.AddrPort) error
	// selves are clb's endpoints on this transport, one per listener, in
	// the order bound; the slice is the transport's own, not a copy.
	selves() []endpoint
	// serve starts the goroutines that read the listeners (and accept);
	// they stop after close.
	serve()
	// send puts data on the wire to addr: a datagram, or a message on the
	// open connection with addr, opened if need be.
	send(addr netip.AddrPort, data []byte) error
	// connWith is the open connection with the peer at remote, or nil; nil
	// always for a datagram transport.
	connWith(remote netip.AddrPort) conn
	// close closes every listener and connection and refuses new ones.
	close()
}

// conn is one connection of a stream transport, accepted or opened. A
// request that came on it carries it (inbound.conn) so that clb's answer
// and the response to it go back on it (destination.conn) while it is open
// (RFC 3261 18.2.2). write is safe for concurrent use: writes are
// serialised, each message whole.
type conn interface {
	write(b []byte) error
}

var (
	_ transport = (*udpTransport)(nil)
	_ transport = (*streamTransport)(nil)
	_ conn      = (*streamConn)(nil)
)

// pick is the index in selves of the listener a message to "to" leaves
// from, and so the one clb's Via names: the first of to's address family,
// else the first; -1 if there is none.
func pick(selves []endpoint, to netip.Addr) int {
	for i, self := range selves {
		if self.addr.Addr().Is4() == to.Unmap().Is4() {
			return i
		}
	}
	if len(selves) > 0 {
		return 0
	}
	return -1
}
