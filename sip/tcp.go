package sip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/sip/framing"
)

// tcpConn is one TCP connection, accepted or opened; writes are serialised.
type tcpConn struct {
	c            net.Conn
	remote       netip.AddrPort
	local        endpoint // clb's TCP listener, what its Via names
	writeTimeout time.Duration

	mu sync.Mutex
}

func (c *tcpConn) write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.c.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return err
	}
	_, err := c.c.Write(b)
	return err
}

// conn is one connection of a stream transport, accepted or opened. A
// request that came on it carries it (inbound.conn) so that clb's answer
// and the response to it go back on it (destination.conn) while it is open
// (RFC 3261 18.2.2). write is safe for concurrent use: writes are
// serialised, each message whole.
type conn interface {
	write(b []byte) error
}

var _ conn = (*tcpConn)(nil)

// connWith implements sender.
func (s *Server) connWith(a netip.AddrPort) conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.conns[a]; c != nil {
		return c
	}
	return nil // not a nil *tcpConn in a non-nil conn
}

func (s *Server) accept(l *tcpListener) {
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("tcp accept", zap.Error(err))
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors: do not spin
			continue
		}
		tc := &tcpConn{c: c, remote: localAddr(c.RemoteAddr()), local: l.self, writeTimeout: s.opts.WriteTimeout}
		if !s.register(tc) {
			c.Close()
			continue
		}
		s.wg.Go(func() { s.readTCP(tc) })
	}
}

// register adds c to the table unless the server is closing or full.
func (s *Server) register(c *tcpConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= s.opts.MaxConns {
		return false
	}
	s.conns[c.remote] = c
	return true
}

func (s *Server) unregister(c *tcpConn) {
	s.mu.Lock()
	if s.conns[c.remote] == c {
		delete(s.conns, c.remote)
	}
	s.mu.Unlock()
	c.c.Close()
}

// dial returns the connection to a, opening it if need be; one dial at a
// time per address.
func (s *Server) dial(a netip.AddrPort) (*tcpConn, error) {
	for {
		s.mu.Lock()
		if c := s.conns[a]; c != nil {
			s.mu.Unlock()
			return c, nil
		}
		if s.closed {
			s.mu.Unlock()
			return nil, net.ErrClosed
		}
		wait, busy := s.dialing[a]
		if !busy {
			wait = make(chan struct{})
			s.dialing[a] = wait
		}
		s.mu.Unlock()
		if busy {
			<-wait
			continue
		}
		c, err := s.open(a)
		s.mu.Lock()
		delete(s.dialing, a)
		s.mu.Unlock()
		close(wait)
		return c, err
	}
}

func (s *Server) open(a netip.AddrPort) (*tcpConn, error) {
	self, ok := s.listener("tcp", a.Addr())
	if !ok {
		return nil, fmt.Errorf("no TCP listener to name in Via for %s", a)
	}
	d := net.Dialer{Timeout: s.opts.DialTimeout}
	c, err := d.Dial("tcp", a.String())
	if err != nil {
		return nil, err
	}
	tc := &tcpConn{c: c, remote: a, local: self, writeTimeout: s.opts.WriteTimeout}
	if !s.register(tc) {
		c.Close()
		return nil, fmt.Errorf("connection table full or closed")
	}
	s.wg.Go(func() { s.readTCP(tc) })
	return tc, nil
}

// readTCP frames messages on a connection (RFC 3261 18.3: by Content-Length)
// and hands each to the proxy. Framing errors close the connection: past
// one, there is no message boundary to resume at.
func (s *Server) readTCP(c *tcpConn) {
	defer s.unregister(c)
	buf := make([]byte, 8192)
	have := 0
	var sc scratch
	for {
		if err := c.c.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout)); err != nil {
			return
		}
		if have == len(buf) {
			if len(buf) >= maxMessage+4 {
				return // a message that does not end: refuse to buffer more
			}
			grown := make([]byte, min(2*len(buf), maxMessage+4))
			copy(grown, buf[:have])
			buf = grown
		}
		n, err := c.c.Read(buf[have:])
		have += n
		for {
			used, ok := s.frame(c, buf[:have], &sc)
			if !ok {
				return
			}
			if used == 0 {
				break
			}
			have = copy(buf, buf[used:have])
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				if ce := s.log.Check(zap.DebugLevel, "tcp read"); ce != nil {
					ce.Write(zap.Stringer("peer", c.remote), zap.Error(err))
				}
			}
			return
		}
	}
}

// frame handles the first message (or keep-alive) in b. It returns the bytes
// used (0: need more), and false to close the connection.
func (s *Server) frame(c *tcpConn, b []byte, sc *scratch) (int, bool) {
	kind, n := framing.Next(b)
	switch kind {
	case framing.Ping:
		return n, c.write([]byte(framing.Pong)) == nil
	case framing.Blank:
		return n, true
	case framing.NeedMore:
		return 0, true
	case framing.BadLength:
		// Missing, repeated or malformed Content-Length: a stream cannot be
		// framed. Answer what can be answered, then close.
		sc.wire = scan(b[:n], sc.wire.lines)
		in := inbound{data: b[:n], local: c.local, src: c.remote, conn: c}
		s.proxy.rejectFraming(&in, sc, &sc.wire)
		return n, false
	case framing.Message:
		in := inbound{data: b[:n], local: c.local, src: c.remote, conn: c}
		s.proxy.handle(&in, sc)
		return n, true
	}
	return 0, false // too large
}
