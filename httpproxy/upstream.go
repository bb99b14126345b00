package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"clb/certs"
	"clb/config"
)

// upConn is a keep-alive connection to an instance. Its reader and writer
// are the pool's while it is idle in the pool (nil then).
type upConn struct {
	c     net.Conn
	dc    *deadlineConn // c with the deadlines of the exchange under way
	addr  string        // the pool's key: scheme://host:port
	since time.Time     // idle since
	*rwBuffers
}

// rwBuffers are a connection's reader and writer, pooled while it is idle.
type rwBuffers struct {
	br *bufio.Reader
	bw *bufio.Writer
}

func newRWBuffers(readSize, writeSize int) rwBuffers {
	return rwBuffers{br: bufio.NewReaderSize(nil, readSize), bw: bufio.NewWriterSize(nil, writeSize)}
}

// attach starts the buffers on c.
func (b *rwBuffers) attach(c io.ReadWriter) {
	b.br.Reset(c)
	b.bw.Reset(c)
}

// detach drops what they hold and their connection, to be pooled.
func (b *rwBuffers) detach() {
	b.br.Reset(nil)
	b.bw.Reset(nil)
}

// pool keeps idle connections to instances, by address, newest first.
type pool struct {
	dialTimeout time.Duration
	idleTimeout time.Duration
	maxIdle     int
	now         func() time.Time
	tls         *certs.Store // for https:// instances

	bufs sync.Pool // *rwBuffers

	mu     sync.Mutex
	idle   map[string][]*upConn
	closed bool
}

func newPool(dial, idle time.Duration, maxIdle int, now func() time.Time) *pool {
	p := &pool{dialTimeout: dial, idleTimeout: idle, maxIdle: maxIdle, now: now, idle: map[string][]*upConn{}}
	p.bufs.New = func() any {
		b := newRWBuffers(16<<10, 16<<10)
		return &b
	}
	return p
}

// takeBuffers gives c a reader and a writer.
func (p *pool) takeBuffers(c *upConn) {
	c.rwBuffers = p.bufs.Get().(*rwBuffers)
	c.attach(c.dc)
}

// giveBuffers takes them back from a connection with nothing buffered
// either way.
func (p *pool) giveBuffers(c *upConn) {
	b := c.rwBuffers
	c.rwBuffers = nil
	b.detach()
	p.bufs.Put(b)
}

// errDial marks a failure to open a connection: nothing of the request was
// sent, so retrying elsewhere is safe.
type errDial struct{ err error }

func (e *errDial) Error() string { return "connect: " + e.err.Error() }
func (e *errDial) Unwrap() error { return e.err }

// get returns an idle connection to addr, or a new one (always, with
// fresh). An idle connection is first checked (a non-blocking read) for a
// close by the instance and for bytes it sent while idle: such bytes answer
// no request of clb's, and read as the next response they would deliver
// the wrong answer, so the connection is closed instead.
//
// An https:// instance is dialed over TLS, the handshake within the dial
// timeout, its certificate verified against the pool's roots with its
// configured host as the name; a failed handshake is an errDial like a
// refused connection. (An idle TLS connection is checked only for bytes
// already read: a raw read would take TLS records, such as TLS 1.3 session
// tickets, from under the TLS layer.)
func (p *pool) get(e config.Endpoint, fresh bool) (c *upConn, reused bool, err error) {
	addr := e.String()
	for !fresh {
		c := p.pop(addr)
		if c == nil {
			break
		}
		if p.now().Sub(c.since) < p.idleTimeout && alive(c) {
			p.takeBuffers(c)
			return c, true, nil
		}
		c.c.Close()
	}
	var conn net.Conn
	ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout)
	defer cancel()
	if e.Transport == "https" {
		d := tls.Dialer{NetDialer: &net.Dialer{}, Config: p.tls.ClientConfig(e.Host, "http/1.1")}
		conn, err = d.DialContext(ctx, "tcp", e.Addr())
	} else {
		d := net.Dialer{}
		conn, err = d.DialContext(ctx, "tcp", e.Addr())
	}
	if err != nil {
		return nil, false, &errDial{err}
	}
	c = &upConn{c: conn, dc: newDeadlineConn(conn), addr: addr}
	p.takeBuffers(c)
	return c, false, nil
}

func (p *pool) pop(addr string) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	if len(list) == 0 {
		return nil
	}
	c := list[len(list)-1]
	p.idle[addr] = list[:len(list)-1]
	return c
}

// alive reports whether an idle connection is still open and silent: a
// non-blocking read finds nothing to read. (It was pooled with nothing
// buffered.)
func alive(c *upConn) bool {
	if c.dc.raw == nil {
		return true
	}
	var n int
	var err error
	var b [1]byte
	if rerr := c.dc.raw.Read(func(fd uintptr) bool {
		n, err = syscall.Read(int(fd), b[:])
		return true
	}); rerr != nil {
		return false
	}
	return n < 0 && err == syscall.EAGAIN
}

// put returns a connection whose exchange ended cleanly, with nothing
// buffered; its buffers go back to the pool's.
func (p *pool) put(c *upConn) {
	c.since = p.now()
	p.giveBuffers(c)
	p.mu.Lock()
	if !p.closed && len(p.idle[c.addr]) < p.maxIdle {
		p.idle[c.addr] = append(p.idle[c.addr], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

// drop closes the idle connections to addr: one of them was found closed by
// the instance, which probably restarted, so the others are likely closed
// too.
func (p *pool) drop(addr string) {
	p.mu.Lock()
	list := p.idle[addr]
	delete(p.idle, addr)
	p.mu.Unlock()
	for _, c := range list {
		c.c.Close()
	}
}

// close closes every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, list := range p.idle {
		for _, c := range list {
			c.c.Close()
		}
	}
	p.idle = map[string][]*upConn{}
}
