package netpark

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// ErrUnsupported is Park's answer where connections cannot be parked (no
// epoll, or a connection without a file descriptor).
var ErrUnsupported = errors.New("netpark: parking not supported")

// ErrClosed is Park's answer once Close has been called.
var ErrClosed = errors.New("netpark: parker closed")

// Options configure a Parker.
type Options struct {
	// Tick is the resolution of deadlines; 0 means 1 s.
	Tick time.Duration
}

func (o Options) tick() time.Duration {
	if o.Tick <= 0 {
		return time.Second
	}
	return o.Tick
}

// rawConnOf unwraps c (a *tls.Conn, or anything else with NetConn) down to
// the connection that has a file descriptor.
func rawConnOf(c net.Conn) (syscall.RawConn, error) {
	for range 8 {
		if sc, ok := c.(syscall.Conn); ok {
			return sc.SyscallConn()
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	return nil, ErrUnsupported
}
