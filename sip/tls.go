package sip

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"clb/certs"
)

// tlsNetwork is SIP over TLS (RFC 3261 26.2, RFC 5630): tcpNetwork's
// connections wrapped by tls.Server and tls.Client with the material in
// force in store. A reload swaps the store's material: connections opened
// after it use the new certificate, those already open go on.
//
// Dialed connections (to instances, and to clients whose connection is
// gone) verify the peer's certificate against tls.instance_ca or the
// system's roots, with the peer's IP address as the name, and finish their
// handshake within the dial timeout. An accepted connection's handshake
// happens on its reader goroutine (streamTransport.read), within the
// message timeout.
type tlsNetwork struct {
	store *certs.Store
}

func (n tlsNetwork) listen(addr netip.AddrPort) (net.Listener, error) {
	ln, err := tcpNetwork{}.listen(addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, n.store.ServerConfig()), nil
}

func (n tlsNetwork) dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: n.store.ClientConfig(addr.Addr().String())}
	return d.DialContext(ctx, "tcp", addr.String())
}

// handshaker is a connection with a handshake to finish before it carries
// messages (a TLS one).
type handshaker interface {
	HandshakeContext(ctx context.Context) error
}

var _ handshaker = (*tls.Conn)(nil)
