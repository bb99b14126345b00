package rawtcp

import "net"

// Listener accepts connections read and written by raw system calls
// (Wrap); a TLS listener over it has its records read and written so too.
type Listener struct{ *net.TCPListener }

func (l Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err // not a nil *TCPConn in a non-nil net.Conn
	}
	return Wrap(c), nil
}
