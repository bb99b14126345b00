package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"clb/certs"
	"clb/config"
	"clb/rawtcp"
)

// upConn is a keep-alive connection to an instance. Its reader and writer
// are the pool's while it is idle in the pool (nil then).
type upConn struct {
	c     net.Conn
	dc    *deadlineConn // c with the deadlines of the exchange under way
	addr  poolKey       // the pool's key
	since time.Time     // idle since
	*rwBuffers

	// alive's non-blocking read, made once per connection: a closure
	// made per call, and what it captures, were five allocations a request.
	probe    func(fd uintptr) bool
	probeN   int
	probeErr syscall.Errno
	probeBuf [1]byte
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

// pool keeps idle connections to instances, by address, newest first. The
// address is the Endpoint itself, not its string: building that was two
// allocations per request. Each event loop keeps its own connections
// under its own key (poolKey.loop): a loop's sockets are not Go's, and a
// goroutine cannot block on them.
type pool struct {
	dialTimeout time.Duration
	idleTimeout time.Duration
	maxIdle     int
	tls         *certs.Store // for https:// instances

	bufs sync.Pool // *rwBuffers

	mu     sync.Mutex
	idle   map[poolKey]*idleList
	closed bool
}

// idleList is one key's idle connections, oldest first: behind a pointer,
// so that taking and putting back look the key up once.
type idleList struct{ conns []*upConn }

// poolKey is an instance's address and whose connections these are: 0
// the goroutines', i the event loop i-1's.
type poolKey struct {
	e    config.Endpoint
	loop int
}

func newPool(dial, idle time.Duration, maxIdle int) *pool {
	p := &pool{dialTimeout: dial, idleTimeout: idle, maxIdle: maxIdle, idle: map[poolKey]*idleList{}}
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
// fresh); now is the request's time. An idle connection is first checked (a non-blocking read) for a
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
func (p *pool) get(e config.Endpoint, fresh bool, now time.Time) (c *upConn, reused bool, err error) {
	if !fresh {
		if c := p.popAlive(poolKey{e: e}, now, true); c != nil {
			return c, true, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", e.Addr())
	if err != nil {
		return nil, false, &errDial{err}
	}
	if e.Transport == "https" {
		// Over the raw connection (rawtcp), as a plain one is by newDeadlineConn.
		tc := tls.Client(rawtcp.Wrap(conn.(*net.TCPConn)), p.tls.ClientConfig(e.Host, "http/1.1"))
		if err := tc.HandshakeContext(ctx); err != nil {
			tc.Close()
			return nil, false, &errDial{err}
		}
		conn = tc
	}
	c = newUpConn(conn, poolKey{e: e})
	p.takeBuffers(c)
	return c, false, nil
}

// popAlive is the newest idle connection under k that is still good (not
// idle too long and, with probe, alive), with its buffers; nil: none. An
// event loop takes its own without the probe: its epoll set reports a
// close or stray bytes on an idle one, which it evicts before it serves
// the requests of the same pass (loop.run).
func (p *pool) popAlive(k poolKey, now time.Time, probe bool) *upConn {
	for {
		c := p.pop(k)
		if c == nil {
			return nil
		}
		if now.Sub(c.since) < p.idleTimeout && (!probe || alive(c)) {
			p.takeBuffers(c)
			return c
		}
		c.c.Close()
	}
}

// newUpConn is apart from get, whose result its closure would otherwise
// move to the heap on every call.
func newUpConn(conn net.Conn, k poolKey) *upConn {
	dc := newDeadlineConn(conn)
	c := &upConn{c: conn, dc: dc, addr: k}
	c.probe = func(fd uintptr) bool {
		c.probeN, c.probeErr = rawtcp.Read(fd, c.probeBuf[:])
		return true
	}
	return c
}

func (p *pool) pop(addr poolKey) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[addr]
	if l == nil || len(l.conns) == 0 {
		return nil
	}
	n := len(l.conns) - 1
	c := l.conns[n]
	l.conns[n] = nil
	l.conns = l.conns[:n]
	return c
}

// alive reports whether an idle connection is still open and silent: a
// non-blocking read finds nothing to read. (It was pooled with nothing
// buffered.)
func alive(c *upConn) bool {
	if c.dc.raw == nil {
		return true
	}
	if err := c.dc.raw.Read(c.probe); err != nil {
		return false
	}
	return c.probeN < 0 && c.probeErr == syscall.EAGAIN
}

// put returns a connection whose exchange ended cleanly, idle since, with
// nothing buffered; its buffers go back to the pool's.
func (p *pool) put(c *upConn, since time.Time) {
	c.since = since
	p.giveBuffers(c)
	p.mu.Lock()
	if !p.closed {
		l := p.idle[c.addr]
		if l == nil {
			l = &idleList{}
			p.idle[c.addr] = l
		}
		if len(l.conns) < p.maxIdle {
			l.conns = append(l.conns, c)
			c = nil
		}
	}
	p.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

// drop closes the idle connections to addr: one of them was found closed by
// the instance, which probably restarted, so the others are likely closed
// too.
func (p *pool) drop(addr poolKey) {
	p.mu.Lock()
	l := p.idle[addr]
	delete(p.idle, addr)
	p.mu.Unlock()
	if l == nil {
		return
	}
	for _, c := range l.conns {
		c.c.Close()
	}
}

// remove takes c, idle under its key, out of the pool; false: it was not
// there (taken, or dropped).
func (p *pool) remove(c *upConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[c.addr]
	if l == nil {
		return false
	}
	for i, o := range l.conns {
		if o == c {
			l.conns = slices.Delete(l.conns, i, i+1)
			return true
		}
	}
	return false
}

// close closes every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, l := range p.idle {
		for _, c := range l.conns {
			c.c.Close()
		}
	}
	p.idle = map[poolKey]*idleList{}
}
