package sip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"clb/config"
	"clb/netpark"
	"clb/policy"
)

// wsTransport is SIP over WebSocket (RFC 7118), "ws" over plain TCP or
// "wss" over TLS: listeners only (a browser cannot be dialed), a goroutine
// per connection while it carries messages (an idle one is parked, package
// netpark), one SIP message per WebSocket message. The handshake
// (gobwas/ws's Upgrader on the raw connection, so no HTTP server's buffers
// stay behind) must ask for subprotocol "sip", come from an allowed Origin
// (ws.origins) and name the listener's path; the frames are clb's own
// (wsframe.go). The connection table is keyed by peer and bounded by
// ws.max_connections; each connection has an id, never reused, that its
// flow token names (flow.go), so that a request an instance sends towards
// the client finds this connection by the token in its Route.
type wsTransport struct {
	token   string // "ws" or "wss"
	network streamNetwork
	proxy   *Proxy
	log     *zap.Logger
	opts    wsOptions
	ws      atomic.Pointer[config.WS] // the ws section in force: a reload swaps it
	flows   *flowKey
	wg      *sync.WaitGroup // the Server's

	listeners []net.Listener
	self      []endpoint // self[i] is listeners[i]'s
	paths     []string   // paths[i] is listeners[i]'s HTTP path, "" for any

	nextID atomic.Uint64
	bufs   sync.Pool // *wsState

	park   *netpark.Parker // nil where connections cannot be parked
	linger time.Duration

	mu     sync.Mutex // guards conns and closed
	conns  map[netip.AddrPort]*wsConn
	closed bool
}

// wsOptions are the stream transports' write and message timeouts.
type wsOptions struct {
	writeTimeout, messageTimeout time.Duration
}

func newWSTransport(token string, network streamNetwork, proxy *Proxy, log *zap.Logger, o wsOptions, w config.WS, flows *flowKey, wg *sync.WaitGroup) *wsTransport {
	t := &wsTransport{token: token, network: network, proxy: proxy, log: log.With(zap.String("transport", token)),
		opts: o, flows: flows, wg: wg, conns: map[netip.AddrPort]*wsConn{}}
	t.bufs.New = func() any { return &wsState{buf: make([]byte, wsBuffer)} }
	t.ws.Store(&w)
	// Deadlines (pings, idle timeouts) are kept to a sixteenth of the
	// shorter, within 10 ms to 1 s.
	wait := w.IdleTimeout
	if w.PingInterval > 0 {
		wait = min(wait, w.PingInterval)
	}
	p, err := netpark.New(netpark.Options{Tick: min(max(wait/16, 10*time.Millisecond), time.Second)})
	if err != nil && !errors.Is(err, netpark.ErrUnsupported) {
		t.log.Warn("idle connections keep their goroutine: no parking", zap.Error(err))
	}
	t.park, t.linger = p, 100*time.Millisecond
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	t.nextID.Store(binary.BigEndian.Uint64(b[:]))
	return t
}

func (t *wsTransport) name() string { return t.token }

func (t *wsTransport) selves() []endpoint { return t.self }

// listenPath binds a listener whose handshakes must name path.
func (t *wsTransport) listenPath(addr netip.AddrPort, path string) error {
	ln, err := t.network.listen(addr)
	if err != nil {
		return err
	}
	t.listeners = append(t.listeners, ln)
	t.self = append(t.self, endpoint{t.token, localAddr(ln.Addr())})
	t.paths = append(t.paths, path)
	return nil
}

func (t *wsTransport) listen(addr netip.AddrPort) error { return t.listenPath(addr, "") }

func (t *wsTransport) serve() {
	t.wg.Go(t.park.Run)
	for i := range t.listeners {
		t.wg.Go(func() { t.accept(i) })
	}
}

func (t *wsTransport) close() {
	for _, c := range shut(&t.mu, &t.closed, t.conns, t.listeners) {
		c.closeWith(closeGoingAway)
	}
	t.park.Close() // its Run hands the parked ones, closed, to expired
}

// send: a WebSocket client is reached only on its open connection.
func (t *wsTransport) send(a netip.AddrPort, data []byte) error {
	if c := t.lookup(a); c != nil {
		return c.write(data)
	}
	return fmt.Errorf("no %s connection with %s (a WebSocket client cannot be dialed)", t.token, a)
}

func (t *wsTransport) connWith(a netip.AddrPort) conn {
	if c := t.lookup(a); c != nil {
		return c
	}
	return nil // not a nil *wsConn in a non-nil conn
}

func (t *wsTransport) lookup(a netip.AddrPort) *wsConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[a]
}

// byFlow is the open connection f names, or nil if it is gone (or was
// never this process's).
func (t *wsTransport) byFlow(f flowID) *wsConn {
	c := t.lookup(f.peer)
	if c == nil || c.id != f.id {
		return nil
	}
	return c
}

func (t *wsTransport) accept(i int) {
	ln, self, path := t.listeners[i], t.self[i], t.paths[i]
	for {
		c, err := ln.Accept()
		if err != nil {
			if policy.AcceptFailed(t.log, err) {
				continue
			}
			return
		}
		wc := &wsConn{c: c, remote: localAddr(c.RemoteAddr()), local: self, writeTimeout: t.opts.writeTimeout,
			id: t.nextID.Add(1)}
		wc.token = t.flows.token(flowID{t.token, wc.id, wc.remote})
		if !t.register(wc) {
			c.Close()
			continue
		}
		t.wg.Go(func() { t.read(wc, path) })
	}
}

// register adds c to the table unless the transport is closing or full.
func (t *wsTransport) register(c *wsConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.conns) >= t.ws.Load().MaxConnections {
		return false
	}
	t.conns[c.remote] = c
	return true
}

func (t *wsTransport) unregister(c *wsConn) {
	t.mu.Lock()
	if t.conns[c.remote] == c {
		delete(t.conns, c.remote)
	}
	t.mu.Unlock()
	c.c.Close()
}

// handshake finishes TLS (wss) and the WebSocket handshake within the
// message timeout. It refuses, with an HTTP status that says why, a
// handshake to another path (404), without subprotocol sip (400: RFC 7118
// 4.1), or from an Origin ws.origins does not list (403).
func (t *wsTransport) handshake(c *wsConn, path string) bool {
	deadline := time.Now().Add(t.opts.messageTimeout)
	if err := c.c.SetDeadline(deadline); err != nil {
		return false
	}
	if h, ok := c.c.(handshaker); ok {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := h.HandshakeContext(ctx)
		cancel()
		if err != nil {
			t.debug("tls handshake failed", c, err)
			return false
		}
	}
	sip, origin := false, ""
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if path != "" && requestPath(uri) != path {
				return ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("no SIP WebSocket at this path"))
			}
			return nil
		},
		Protocol: func(p []byte) bool {
			sip = sip || strings.EqualFold(string(p), "sip")
			return sip
		},
		OnHeader: func(k, v []byte) error {
			if strings.EqualFold(string(k), "Origin") {
				origin = string(v)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !sip {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(400), ws.RejectionReason("subprotocol sip required (RFC 7118)"))
			}
			if !t.ws.Load().OriginAllowed(origin) {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))
			}
			return ws.HandshakeHeaderString(""), nil
		},
	}
	if _, err := u.Upgrade(c.c); err != nil {
		t.debug("websocket handshake refused", c, err)
		return false
	}
	return c.c.SetDeadline(time.Time{}) == nil
}

// requestPath is the path of a handshake's request target (origin form
// "/sip?x" or absolute form "wss://host/sip").
func requestPath(uri []byte) string {
	s := string(uri)
	if !strings.HasPrefix(s, "/") {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(u.Path, "/")
	}
	s, _, _ = strings.Cut(s, "?")
	return strings.TrimSuffix(s, "/")
}

func (t *wsTransport) debug(msg string, c *wsConn, err error) {
	if ce := t.log.Check(zap.DebugLevel, msg); ce != nil {
		ce.Write(zap.Stringer("peer", c.remote), zap.Error(err))
	}
}

// wsMessage is a message arriving in fragments.
type wsMessage struct {
	open bool
	data []byte
}

// wsState is what a connection needs only while it has bytes to frame:
// its read buffer and the proxy's scratch. An idle connection gives it
// back to the transport's pool, so that it holds none of it.
type wsState struct {
	buf []byte
	sc  scratch
}

// wsBuffer is a pooled read buffer's size; one grown for a large message
// is not pooled again.
const wsBuffer = 2048

// read serves a new connection: its handshake, then its frames.
func (t *wsTransport) read(c *wsConn, path string) {
	if !t.handshake(c, path) {
		t.unregister(c)
		return
	}
	c.last = time.Now()
	t.frames(c, false)
}

// frames handles a connection's frames until it closes or is parked
// (woken: it was parked and is readable). A connection from which nothing
// has come for ws.ping_interval is pinged; one from which nothing, not
// even a pong, has come for ws.idle_timeout is closed (both as in force
// when it goes idle, or parked when its wait ends: a reload applies to open
// connections); a frame begun must end within the message timeout. Idle,
// it waits on a few bytes of its own; what it reads then is framed in a
// pooled wsState. Idle for linger between whole messages, it is parked
// (package netpark) until it is readable or its next ping or idle
// deadline, with neither goroutine nor buffer.
func (t *wsTransport) frames(c *wsConn, woken bool) {
	var st *wsState // nil while idle
	defer func() {
		if st != nil {
			t.bufs.Put(st)
		}
	}()
	var first [16]byte
	have := 0
	var msg wsMessage
	var partial time.Time
	canPark := t.park != nil
	idleSince := time.Now() // when it last had nothing to frame, for linger
	for {
		w := t.ws.Load()
		var deadline time.Time
		lingering := false
		if have > 0 {
			if partial.IsZero() {
				partial = time.Now()
			}
			deadline = partial.Add(t.opts.messageTimeout)
		} else {
			partial = time.Time{}
			deadline = c.idleDeadline(w)
			// A woken connection reads what woke it first; one in the
			// middle of a fragmented message is not parked.
			if l := idleSince.Add(t.linger); canPark && !woken && !msg.open && l.Before(deadline) {
				deadline, lingering = l, true
			}
		}
		if err := c.c.SetReadDeadline(deadline); err != nil {
			t.unregister(c)
			return
		}
		var n int
		var err error
		if st == nil {
			if n, err = c.c.Read(first[:]); n > 0 {
				st = t.bufs.Get().(*wsState)
				have = copy(st.buf, first[:n])
			}
		} else {
			if have == len(st.buf) {
				grown := make([]byte, max(min(2*len(st.buf), w.MaxMessage+maxFrameHeader), have+1))
				copy(grown, st.buf[:have])
				st.buf = grown
			}
			n, err = c.c.Read(st.buf[have:])
			have += n
		}
		woken = false // what woke it is read (a TLS record may carry no data)
		if n > 0 {
			c.last, c.pinged = time.Now(), false
		}
		for st != nil {
			used, ok := t.frame(c, st.buf[:have], &msg, &st.sc)
			if !ok {
				t.unregister(c)
				return
			}
			if used == 0 {
				break
			}
			have = copy(st.buf, st.buf[used:have])
		}
		if have == 0 && st != nil {
			if len(st.buf) == wsBuffer {
				t.bufs.Put(st)
			}
			st, idleSince = nil, time.Now()
		}
		if err == nil {
			continue
		}
		if lingering && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// Nothing came for linger, and the read that timed out left
			// nothing in a TLS connection's buffers either: parked, the
			// socket's readiness tells all.
			if t.parkConn(c) {
				return
			}
			canPark = false
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && have == 0 && t.ping(c, w) {
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			t.debug("websocket read", c, err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.closeWith(closeGoingAway)
		}
		t.unregister(c)
		return
	}
}

// idleDeadline is when an idle connection is next pinged, or closed if it
// has been pinged (or pings are off).
func (c *wsConn) idleDeadline(w *config.WS) time.Time {
	deadline := c.last.Add(w.IdleTimeout)
	if w.PingInterval > 0 && !c.pinged {
		if ping := c.last.Add(w.PingInterval); ping.Before(deadline) {
			return ping
		}
	}
	return deadline
}

// ping pings a connection silent until its idle deadline if it is due a
// ping (not pinged yet, pings on, its idle timeout not passed); false if
// it is not, or the ping could not be sent: it is then to be closed.
func (t *wsTransport) ping(c *wsConn, w *config.WS) bool {
	if c.pinged || w.PingInterval <= 0 || time.Since(c.last) >= w.IdleTimeout {
		return false
	}
	c.pinged = true
	return c.writeFrame(opPing, nil) == nil
}

// parkConn parks an idle connection until it is readable or its idle
// deadline passes; false leaves it with the caller.
func (t *wsTransport) parkConn(c *wsConn) bool {
	deadline := c.idleDeadline(t.ws.Load())
	err := t.park.Park(c.c, deadline,
		func() { t.wg.Go(func() { t.frames(c, true) }) },
		func() { t.wg.Go(func() { t.expired(c, deadline) }) })
	return err == nil
}

// expired handles a parked connection whose deadline passed: pinged and
// parked again, or closed (1001) once its idle timeout has passed. Before
// its deadline, the Parker is closing (clb shuts down): closed too.
func (t *wsTransport) expired(c *wsConn, deadline time.Time) {
	if !time.Now().Before(deadline) && t.ping(c, t.ws.Load()) {
		if t.parkConn(c) {
			return
		}
		t.frames(c, false)
		return
	}
	c.closeWith(closeGoingAway)
	t.unregister(c)
}

// frame handles the first frame in b. It returns the bytes used (0: need
// more), and false to close the connection (a close frame sent first when
// the peer broke the protocol).
func (t *wsTransport) frame(c *wsConn, b []byte, msg *wsMessage, sc *scratch) (int, bool) {
	maxMessage := t.ws.Load().MaxMessage
	f, st, code := parseFrame(b, maxMessage)
	switch {
	case st == frameBad:
		c.closeWith(code)
		return 0, false
	case st == frameNeedMore || len(b) < f.header+f.length:
		return 0, true
	}
	n := f.header + f.length
	payload := b[f.header:n]
	ws.Cipher(payload, f.mask, 0)
	switch f.op {
	case opText, opBinary:
		if msg.open {
			c.closeWith(closeProtocol) // a new message inside a fragmented one
			return 0, false
		}
		if !f.fin {
			msg.open, msg.data = true, append(msg.data[:0], payload...)
			return n, true
		}
		return n, t.message(c, payload, f.op, sc)
	case opContinuation:
		if !msg.open {
			c.closeWith(closeProtocol)
			return 0, false
		}
		if len(msg.data)+len(payload) > maxMessage {
			c.closeWith(closeTooBig)
			return 0, false
		}
		msg.data = append(msg.data, payload...)
		if !f.fin {
			return n, true
		}
		ok := t.message(c, msg.data, opText, sc)
		*msg = wsMessage{} // its memory goes with it: idle connections hold none
		return n, ok
	case opPing:
		return n, c.writeFrame(opPong, payload) == nil
	case opPong:
		return n, true
	}
	// Close: answer with the peer's status (RFC 6455 5.5.1), then close.
	status := uint16(closeNormal)
	if len(payload) >= 2 {
		status = uint16(payload[0])<<8 | uint16(payload[1])
	}
	c.closeWith(status)
	return n, false
}

// message hands one SIP message to the proxy; false closes the connection
// (a text message that is not UTF-8, RFC 6455 8.1).
func (t *wsTransport) message(c *wsConn, data []byte, op byte, sc *scratch) bool {
	if op == opText && !utf8.Valid(data) {
		c.closeWith(closeInvalid)
		return false
	}
	if len(bytes.TrimLeft(data, "\r\n")) == 0 {
		// A CRLF keep-alive (RFC 5626 3.5.1) some clients send here too.
		if bytes.Equal(data, []byte("\r\n\r\n")) {
			return c.write([]byte("\r\n")) == nil
		}
		return true
	}
	in := inbound{data: data, local: c.local, src: c.remote, conn: c}
	t.proxy.handle(&in, sc)
	return true
}

// wsConn is one WebSocket connection; writes are serialised, a frame at a
// time.
type wsConn struct {
	c            net.Conn
	remote       netip.AddrPort
	local        endpoint // clb's listener, what its Via and Record-Route name
	writeTimeout time.Duration
	id           uint64
	token        string // the flow token naming this connection

	// Its reader's (frames', or expired's while parked), one at a time:
	last   time.Time // when the peer last sent anything
	pinged bool      // pinged since

	mu     sync.Mutex
	hdr    [maxFrameHeader]byte
	closed bool // a close frame was sent: nothing more may be
}

// write sends one SIP message as one WebSocket message: text when it is
// UTF-8, as SIP almost always is, binary otherwise (RFC 7118 5.2).
func (c *wsConn) write(b []byte) error {
	op := byte(opText)
	if !utf8.Valid(b) {
		op = opBinary
	}
	return c.writeFrame(op, b)
}

func (c *wsConn) writeFrame(op byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if err := c.c.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return err
	}
	bufs := net.Buffers{appendFrameHeader(c.hdr[:0], op, len(payload)), payload}
	_, err := bufs.WriteTo(c.c)
	return err
}

// closeWith sends a close frame with status and closes the connection.
func (c *wsConn) closeWith(status uint16) {
	body := [2]byte{byte(status >> 8), byte(status)}
	_ = c.writeFrame(opClose, body[:])
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.c.Close()
}

// flowToken is the token clb's Record-Route towards this client carries.
func (c *wsConn) flowToken() string { return c.token }

// flowConn is a connection with a flow token: a WebSocket client's.
type flowConn interface {
	conn
	flowToken() string
}

var (
	_ transport = (*wsTransport)(nil)
	_ flowConn  = (*wsConn)(nil)
)
