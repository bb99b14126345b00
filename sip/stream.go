package sip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/netpark"
	"clb/policy"
	"clb/sip/framing"
)

// streamTransport is a connection-oriented SIP transport: listeners with a
// goroutine per accepted connection while it carries messages, connections
// to peers opened on demand, one bounded table of both kinds keyed by the
// peer's address, messages framed by Content-Length (package framing) with
// RFC 5626 keep-alives answered, and idle connections closed. A connection
// with nothing buffered for linger is parked (package netpark): its
// goroutine ends and its read buffer and scratch go back to bufs until it
// is readable again. What a stream transport runs on (plain TCP, TLS) is
// its streamNetwork; the rest is here.
type streamTransport struct {
	token   string
	network streamNetwork
	proxy   *Proxy
	log     *zap.Logger
	opts    streamOptions
	wg      *sync.WaitGroup // the Server's

	listeners []net.Listener
	self      []endpoint // self[i] is listeners[i]'s

	mu      sync.Mutex // guards conns, dialing and closed
	conns   map[netip.AddrPort]*streamConn
	dialing map[netip.AddrPort]chan struct{}
	closed  bool

	park   *netpark.Parker // nil where connections cannot be parked
	linger time.Duration
	bufs   sync.Pool // *streamState
}

// streamState is what a connection needs only while it has bytes to frame.
type streamState struct {
	buf   []byte
	sc    scratch
	batch streamBatch
}

const streamBuffer = 8192

// streamOptions are a stream transport's limits (ServerOptions says their
// defaults).
type streamOptions struct {
	dialTimeout, writeTimeout, idleTimeout, messageTimeout time.Duration
	maxConns                                               int
}

func newStreamTransport(token string, network streamNetwork, proxy *Proxy, log *zap.Logger, o streamOptions, wg *sync.WaitGroup) *streamTransport {
	t := &streamTransport{
		token: token, network: network, proxy: proxy, log: log, opts: o, wg: wg,
		conns:   map[netip.AddrPort]*streamConn{},
		dialing: map[netip.AddrPort]chan struct{}{},
		linger:  100 * time.Millisecond,
	}
	t.bufs.New = func() any {
		st := &streamState{buf: make([]byte, streamBuffer)}
		st.batch.t = t
		st.sc.streams = &st.batch
		return st
	}
	tick := min(max(o.idleTimeout/16, 10*time.Millisecond), time.Second)
	p, err := netpark.New(netpark.Options{Tick: tick})
	if err != nil && !errors.Is(err, netpark.ErrUnsupported) {
		log.Warn("idle connections keep their goroutine: no parking", zap.String("transport", token), zap.Error(err))
	}
	t.park = p
	return t
}

func (t *streamTransport) name() string { return t.token }

func (t *streamTransport) selves() []endpoint { return t.self }

func (t *streamTransport) listen(addr netip.AddrPort) error {
	ln, err := t.network.listen(addr)
	if err != nil {
		return err
	}
	t.listeners = append(t.listeners, ln)
	t.self = append(t.self, endpoint{t.token, localAddr(ln.Addr())})
	return nil
}

func (t *streamTransport) serve() {
	t.wg.Go(t.park.Run)
	for i := range t.listeners {
		t.wg.Go(func() { t.accept(i) })
	}
}

func (t *streamTransport) close() {
	for _, c := range shut(&t.mu, &t.closed, t.conns, t.listeners) {
		c.c.Close()
	}
	t.park.Close() // its Run closes (unregisters) the parked ones
}

// shut marks a connection-oriented transport closed (under mu, so that no
// connection joins conns after it), closes its listeners and returns the
// connections it had, for the caller to close its way.
func shut[K comparable, C any](mu *sync.Mutex, closed *bool, conns map[K]C, listeners []net.Listener) []C {
	mu.Lock()
	*closed = true
	open := make([]C, 0, len(conns))
	for _, c := range conns {
		open = append(open, c)
	}
	mu.Unlock()
	for _, ln := range listeners {
		ln.Close()
	}
	return open
}

// streamConn is one connection, accepted or opened; writes are serialised.
type streamConn struct {
	c            net.Conn
	remote       netip.AddrPort
	local        endpoint // clb's listener on the transport, what its Via names
	writeTimeout time.Duration

	mu sync.Mutex
}

func (c *streamConn) write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Nearly every message goes whole into the socket's buffer at once:
	// the write deadline, a clock read and a timer reset, is set only when
	// one must wait, and lifted after, so that it cannot fail the next.
	tw, try := c.c.(tryWriter)
	if try {
		n, err := tw.TryWrite(b)
		if err != nil || n == len(b) {
			return err
		}
		b = b[n:]
	}
	if err := c.c.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return err
	}
	_, err := c.c.Write(b)
	if try {
		// lifted even after a timeout: the next write gets its own, as
		// when every write set one
		err = cmp.Or(err, c.c.SetWriteDeadline(time.Time{}))
	}
	return err
}

// tryWriter is a connection that can write without waiting (rawtcp's).
type tryWriter interface {
	TryWrite(b []byte) (int, error)
}

func (t *streamTransport) connWith(a netip.AddrPort) conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.conns[a]; c != nil {
		return c
	}
	return nil // not a nil *streamConn in a non-nil conn
}

func (t *streamTransport) send(a netip.AddrPort, data []byte) error {
	c, err := t.dial(a)
	if err != nil {
		return err
	}
	return c.write(data)
}

func (t *streamTransport) accept(i int) {
	ln, self := t.listeners[i], t.self[i]
	for {
		c, err := ln.Accept()
		if err != nil {
			if policy.AcceptFailed(t.log.With(zap.String("transport", t.token)), err) {
				continue
			}
			return
		}
		sc := &streamConn{c: c, remote: localAddr(c.RemoteAddr()), local: self, writeTimeout: t.opts.writeTimeout}
		if !t.register(sc) {
			c.Close()
			continue
		}
		t.wg.Go(func() { t.read(sc) })
	}
}

// register adds c to the table unless the transport is closing or full.
func (t *streamTransport) register(c *streamConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.conns) >= t.opts.maxConns {
		return false
	}
	t.conns[c.remote] = c
	return true
}

func (t *streamTransport) unregister(c *streamConn) {
	t.mu.Lock()
	if t.conns[c.remote] == c {
		delete(t.conns, c.remote)
	}
	t.mu.Unlock()
	c.c.Close()
}

// dial returns the connection to a, opening it if need be; one dial at a
// time per address.
func (t *streamTransport) dial(a netip.AddrPort) (*streamConn, error) {
	for {
		t.mu.Lock()
		if c := t.conns[a]; c != nil {
			t.mu.Unlock()
			return c, nil
		}
		if t.closed {
			t.mu.Unlock()
			return nil, net.ErrClosed
		}
		wait, busy := t.dialing[a]
		if !busy {
			wait = make(chan struct{})
			t.dialing[a] = wait
		}
		t.mu.Unlock()
		if busy {
			<-wait
			continue
		}
		c, err := t.open(a)
		t.mu.Lock()
		delete(t.dialing, a)
		t.mu.Unlock()
		close(wait)
		return c, err
	}
}

func (t *streamTransport) open(a netip.AddrPort) (*streamConn, error) {
	i := pick(t.self, a.Addr())
	if i < 0 {
		return nil, fmt.Errorf("no %s listener to name in Via for %s", t.token, a)
	}
	c, err := t.network.dial(a, t.opts.dialTimeout)
	if err != nil {
		return nil, err
	}
	sc := &streamConn{c: c, remote: a, local: t.self[i], writeTimeout: t.opts.writeTimeout}
	if !t.register(sc) {
		c.Close()
		return nil, fmt.Errorf("connection table full or closed")
	}
	t.wg.Go(func() { t.read(sc) })
	return sc, nil
}

// read serves a new connection: its handshake, then its messages.
func (t *streamTransport) read(c *streamConn) {
	if !t.handshake(c) {
		t.unregister(c)
		return
	}
	t.frameConn(c, time.Time{})
}

// frameConn frames messages on a connection (RFC 3261 18.3: by
// Content-Length) and hands each to the proxy, until the connection closes
// or is parked (woken, with the idle deadline it was parked with: it was,
// and is readable; zero for a new one). Framing errors close the
// connection: past one, there is no message boundary to resume at.
//
// With nothing buffered, a busy connection (its last message came without
// a park before it, within linger of the one before) and a new one wait
// linger here before they are parked; any other is parked at once.
func (t *streamTransport) frameConn(c *streamConn, idleEnd time.Time) {
	st := t.bufs.Get().(*streamState)
	buf, have := st.buf, 0
	var partial time.Time // when the first byte of an unfinished message came
	// The read deadline in force may be up to slack late, never early: it
	// is moved once a slack, not at every read (a timer reset per message).
	var set time.Time
	slack := min(t.linger, t.opts.idleTimeout) / 4
	woken := !idleEnd.IsZero()
	if !woken {
		idleEnd = time.Now().Add(t.opts.idleTimeout)
	}
	canPark := t.park != nil
	served, busy := woken, false // woken: read before parking again
	park := func() bool {
		t.give(st, buf)
		end := idleEnd
		err := t.park.Park(c.c, end, func() { t.wg.Go(func() { t.frameConn(c, end) }) }, func() { t.unregister(c) })
		if err == nil {
			return true
		}
		st = t.bufs.Get().(*streamState) // wait the rest here
		buf = st.buf
		canPark = false
		return false
	}
	for {
		// Idle, the connection may wait IdleTimeout for its next message
		// (parked, after linger here if it is busy); a message begun must
		// end within MessageTimeout of its start.
		deadline, lingering := idleEnd, false
		if have > 0 {
			if partial.IsZero() {
				partial = time.Now()
			}
			deadline = partial.Add(t.opts.messageTimeout)
		} else {
			partial = time.Time{}
			// linger from when it went idle, told by idleEnd; parked at
			// once after a read with a deadline passed already, which
			// costs no system call but takes what a TLS connection holds
			// (a record that came with the last one) first
			if d := idleEnd.Add(t.linger - t.opts.idleTimeout); canPark && !woken && served && !busy {
				deadline, lingering = past, true
			} else if canPark && !woken && d.Before(idleEnd) {
				deadline, lingering = d, true
			}
		}
		if set.Before(deadline) || set.Sub(deadline) > slack {
			set = deadline.Add(slack)
			if err := c.c.SetReadDeadline(set); err != nil {
				break
			}
		}
		if have == len(buf) {
			if len(buf) >= maxMessage+4 {
				break // a message that does not end: refuse to buffer more
			}
			grown := make([]byte, min(2*len(buf), maxMessage+4))
			copy(grown, buf[:have])
			buf = grown
		}
		n, err := c.c.Read(buf[have:])
		if have == 0 && n > 0 {
			if served { // a gap between messages, not since connect
				// woken within linger of going idle: busy too, or one park
				// would have it parked and woken on every message after it
				busy = !woken || time.Now().Before(idleEnd.Add(t.linger-t.opts.idleTimeout))
			}
			served, woken = true, false
		}
		have += n
		ok := true
		for ok {
			var used int
			used, ok = t.frame(c, buf[:have], &st.sc)
			if used == 0 {
				break
			}
			have = copy(buf, buf[used:have])
		}
		st.batch.flush()
		if !ok {
			break
		}
		if n > 0 && have == 0 {
			idleEnd = time.Now().Add(t.opts.idleTimeout)
		}
		if err != nil && lingering && n == 0 && isTimeout(err) {
			if park() {
				return
			}
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				if ce := t.log.Check(zap.DebugLevel, "stream read"); ce != nil {
					ce.Write(zap.String("transport", t.token), zap.Stringer("peer", c.remote), zap.Error(err))
				}
			}
			break
		}
	}
	t.give(st, buf)
	t.unregister(c)
}

// give returns a connection's state to the pool, with its read buffer if
// it has not grown for a large message.
func (t *streamTransport) give(st *streamState, buf []byte) {
	if len(buf) != streamBuffer {
		buf = make([]byte, streamBuffer)
	}
	st.buf = buf
	st.sc.line.Reset(true)
	if cap(st.batch.buf) > 2*streamBatchBytes {
		st.batch.buf = nil // grown by a large message
	}
	t.bufs.Put(st)
}

// past is a deadline that has passed.
var past = time.Unix(1, 0)

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// handshake finishes an accepted connection's handshake, if its network
// has one (TLS), within MessageTimeout, so that a client that connects and
// says nothing holds no more than a connection that trickles a message.
// (A dialed connection has finished its own in dial: this is then a no-op.)
func (t *streamTransport) handshake(c *streamConn) bool {
	h, ok := c.c.(handshaker)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.messageTimeout)
	defer cancel()
	if err := h.HandshakeContext(ctx); err != nil {
		if ce := t.log.Check(zap.DebugLevel, "handshake failed"); ce != nil {
			ce.Write(zap.String("transport", t.token), zap.Stringer("peer", c.remote), zap.Error(err))
		}
		return false
	}
	return true
}

// frame handles the first message (or keep-alive) in b. It returns the bytes
// used (0: need more), and false to close the connection.
func (t *streamTransport) frame(c *streamConn, b []byte, sc *scratch) (int, bool) {
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
		t.proxy.rejectFraming(&in, sc, &sc.wire)
		return n, false
	case framing.Message:
		in := inbound{data: b[:n], local: c.local, src: c.remote, conn: c}
		t.proxy.handle(&in, sc)
		return n, true
	}
	return 0, false // too large
}

// streamBatch is what a connection's goroutine sends to open connections
// while it handles the messages one read brought: one write per connection
// they go to, once it is done. At 10,000 calls/s over TCP a read brought 7
// messages, and writes were half of clb's CPU (a system call and a
// loopback segment each). A message to a peer with no connection open yet
// is sent at once (it is dialled).
type streamBatch struct {
	t       *streamTransport
	buf     []byte // the messages queued, one after another
	pending []pendingStream
	gather  []byte // one connection's messages, when others came between
}

// pendingStream is a queued message, buf[start:end], and what its failure
// is reported with.
type pendingStream struct {
	c          *streamConn // nil once written
	dst        destination
	start, end int
	instance   string // the instance it goes to, "" if none
	counted    bool   // a request forwarded: a failure counts as a send error
}

const streamBatchBytes = 64 << 10

// queue copies data to go to dst at the next flush; false, and nothing
// taken, when it must be sent at once: dst is not one of this
// transport's open connections (or a WebSocket one, framed by its own).
func (b *streamBatch) queue(dst destination, data []byte, instance string, counted bool) bool {
	c, _ := dst.conn.(*streamConn)
	if c == nil {
		if dst.conn != nil || dst.transport != b.t.token {
			return false
		}
		b.t.mu.Lock()
		c = b.t.conns[dst.addr]
		b.t.mu.Unlock()
		if c == nil {
			return false
		}
	}
	if len(b.buf)+len(data) > streamBatchBytes && len(b.pending) > 0 {
		b.flush()
	}
	start := len(b.buf)
	b.buf = append(b.buf, data...)
	b.pending = append(b.pending, pendingStream{c: c, dst: dst, start: start, end: len(b.buf), instance: instance, counted: counted})
	return true
}

// flush writes what is queued: each connection's messages in their order,
// in one write. A message whose connection failed goes as Server.send
// would have sent it: on another connection to the Via's address when it
// was to go back on the one a request came on; else it is reported.
func (b *streamBatch) flush() {
	for i := range b.pending {
		e := &b.pending[i]
		c := e.c
		if c == nil {
			continue // written with an earlier one
		}
		w, last, gathered := b.buf[e.start:e.end], e.end, false
		for j := i + 1; j < len(b.pending); j++ {
			f := &b.pending[j]
			if f.c != c {
				continue
			}
			switch {
			case !gathered && f.start == last: // the next in buf: still one slice
				w, last = b.buf[e.start:f.end], f.end
			case !gathered:
				b.gather, gathered = append(b.gather[:0], w...), true
				fallthrough
			default:
				b.gather = append(b.gather, b.buf[f.start:f.end]...)
			}
		}
		if gathered {
			w = b.gather
		}
		err := c.write(w)
		for j := i; j < len(b.pending); j++ {
			if f := &b.pending[j]; f.c == c {
				f.c = nil
				if err != nil {
					b.failed(f, err)
				}
			}
		}
	}
	b.buf, b.pending = b.buf[:0], b.pending[:0]
}

func (b *streamBatch) failed(f *pendingStream, err error) {
	p := b.t.proxy
	if f.dst.conn != nil {
		// The connection is gone: open another to the Via (RFC 3261 18.2.2).
		if err = p.net.send(destination{endpoint: f.dst.endpoint}, b.buf[f.start:f.end]); err == nil {
			return
		}
	}
	p.sendFailed(f.dst, f.instance, f.counted, err)
}
