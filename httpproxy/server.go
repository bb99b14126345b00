package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"clb/accesslog"
	"clb/balancer"
	"clb/certs"
	"clb/config"
	"clb/metrics"
	"clb/netpark"
	"clb/policy"
)

// Options configure a Server.
type Options struct {
	Balancer *balancer.Balancer
	// Rules are keys.http of the configuration.
	Rules []config.Rule
	// Limits are the timeouts and sizes of the configuration's http section.
	Limits config.HTTP
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RetryAfter goes in 503 responses, in whole seconds rounded up; 0
	// means 5 s.
	RetryAfter time.Duration
	// Report, if set, hears how each attempt to reach an instance went:
	// false for a connection refused or timed out, or a response that did not
	// come (a passive health failure), true for a response head received.
	Report func(instance string, ok bool)
	// Metrics, if set, counts requests, sessions, repairs, retries and
	// errors.
	Metrics *metrics.Metrics
	// Limits is the flood control of SPEC section 12 (zero: none).
	FloodLimits config.Limits
	// Access, if set, writes a line per request while it is on.
	Access *accesslog.Log
	// TLS, if set, is the trust put in https:// instances (tls.instance_ca)
	// and the certificate clb shows one that asks; nil means the system's
	// roots and no certificate. (The listener's certificate is its own
	// configuration's: New takes a TLS listener.)
	TLS *certs.Store
}

// Server is the HTTP front end: it accepts client connections and proxies
// their requests to the instances.
type Server struct {
	o           Options
	log         *zap.Logger
	ln          net.Listener
	scheme      string // X-Forwarded-Proto
	via         string // "1.1 clb-RANDOM": this server's Via entry, also how it knows a loop
	realClock   bool   // Options.Now is time.Now: a request's own clock read serves it
	pool        *pool
	rules       atomic.Pointer[policy.Rules] // keys.http, swapped by Reload
	slots       chan struct{}                // one per open client connection: Limits.MaxConnections
	limitLogged time.Time                    // when the accept loop last logged the limit

	flood atomic.Pointer[flood]
	h2    *h2Server // HTTP/2 for TLS connections that chose h2; nil on plain HTTP

	// Between requests, a busy connection (its last request came within
	// linger of the response before) waits linger in its goroutine, then
	// is parked: no goroutine, its buffers back in bufs. Any other is
	// parked at once, so that a burst of clients that each send a request
	// and then hold their connection does not hold a goroutine and
	// buffers each for linger. park is nil where parking is not
	// supported, and until Serve.
	park   *netpark.Parker
	linger time.Duration
	bufs   sync.Pool // *connState

	// Plain TCP connections are served by event loops (evloop_linux.go)
	// where they are supported: none elsewhere, on HTTPS, and with noLoop
	// (tests). Serve starts them.
	loops     *loops
	noLoop    bool
	loopClock func() time.Time // the loops' clock; nil: time.Now (tests set another)

	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[*clientConn]struct{}
	perSource map[netip.Addr]int // open connections by source
	// closing is set under mu with the connection table, and read without
	// it twice per request.
	closing atomic.Bool
}

// NewServer listens on addr (host:port; port 0 picks one) and serves plain
// HTTP there.
func NewServer(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	return New(ln, "http", o), nil
}

// New serves HTTP/1.1 on ln, which may be any stream listener (a TLS one
// among them); scheme ("http" or "https") is what X-Forwarded-Proto tells
// the instances. With scheme "https" and a TLS listener whose configuration
// offers "h2" by ALPN, the connections that choose it are served HTTP/2
// (h2.go), the others HTTP/1.1. The server owns ln from now on and closes
// it when Serve ends.
func New(ln net.Listener, scheme string, o Options) *Server {
	realClock := o.Now == nil
	if realClock {
		o.Now = time.Now
	}
	if o.Limits == (config.HTTP{}) {
		o.Limits = config.Defaults().HTTP
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	l := o.Limits
	if l.MaxConnections <= 0 {
		l.MaxConnections = config.Defaults().HTTP.MaxConnections
	}
	s := &Server{
		o:         o,
		log:       o.Logger,
		ln:        ln,
		scheme:    scheme,
		via:       newVia(),
		realClock: realClock,
		pool:      newPool(l.DialTimeout, l.UpstreamIdleTimeout, l.MaxIdlePerInstance),
		slots:     make(chan struct{}, l.MaxConnections),
		conns:     map[*clientConn]struct{}{},
		perSource: map[netip.Addr]int{},
		linger:    100 * time.Millisecond,
	}
	readSize := max(l.MaxHeaderBytes, 4096)
	s.bufs.New = func() any {
		return &connState{rwBuffers: newRWBuffers(readSize, 16<<10)}
	}
	s.pool.tls = o.TLS
	if s.pool.tls == nil {
		s.pool.tls = &certs.Store{} // the system's roots
	}
	s.flood.Store(newFlood(o.FloodLimits))
	s.Reload(o.Rules)
	if scheme == "https" {
		s.h2 = newH2Server(s)
	} else {
		s.loops = newLoops(s)
	}
	return s
}

// Reload swaps in the key rules of a reloaded configuration; requests being
// handled finish with the ones they started with.
func (s *Server) Reload(rules []config.Rule) { s.rules.Store(policy.Compile(rules)) }

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections until ctx ends, then shuts down: no new
// connections, idle ones closed, requests in flight given Limits.Grace to
// finish, and the rest closed. It returns when every connection is done.
func (s *Server) Serve(ctx context.Context) error {
	if s.h2 != nil {
		s.h2.start()
	}
	parked := make(chan struct{})
	tick := min(max(s.o.Limits.IdleTimeout/16, 10*time.Millisecond), time.Second)
	if p, err := netpark.New(netpark.Options{Tick: tick}); err == nil {
		s.park = p
	} else if !errors.Is(err, netpark.ErrUnsupported) {
		s.log.Warn("idle connections keep their goroutine: no parking", zap.Error(err))
	}
	go func() { s.park.Run(); close(parked) }()
	defer func() { <-parked }()
	s.loops.start(!s.noLoop)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			if !s.takeSlot(ctx) {
				return
			}
			c, err := s.ln.Accept()
			if err != nil {
				<-s.slots
				if policy.AcceptFailed(s.log, err) {
					continue
				}
				return
			}
			if !s.serveConn(c) {
				c.Close()
				<-s.slots
			}
		}
	}()
	<-ctx.Done()
	s.ln.Close()
	<-accepted
	s.shutdown()
	s.loops.stop()
	return nil
}

// takeSlot waits for room for one more client connection; new connections
// wait in the kernel's listen backlog meanwhile. False: ctx ended. Only the
// accept loop calls it.
func (s *Server) takeSlot(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	s.o.Metrics.Error("http", "connection_limit")
	if now := time.Now(); now.Sub(s.limitLogged) >= 10*time.Second { // at most one line per 10 s when saturated
		s.limitLogged = now
		s.log.Warn("http connection limit reached: not accepting until one closes", zap.Int("max_connections", cap(s.slots)))
	}
	select {
	case s.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing.Store(true)
	busy := 0
	for cc := range s.conns {
		if cc.idle.Load() {
			cc.c.Close()
		} else {
			busy++
		}
	}
	s.mu.Unlock()
	// Parked connections are idle too: closing the parker expires (closes)
	// them.
	s.park.Close()
	s.log.Info("http shutting down", zap.Int("in_flight", busy), zap.Duration("grace", s.o.Limits.Grace))
	if s.h2 != nil {
		// GOAWAY to every HTTP/2 connection; their streams get the grace.
		ctx, cancel := context.WithTimeout(context.Background(), s.o.Limits.Grace)
		s.h2.shutdown(ctx)
		cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.o.Limits.Grace):
		s.mu.Lock()
		for cc := range s.conns {
			cc.c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.pool.close()
}

// clientConn is one client connection and, while it has a request, its
// connState (nil while it is parked, so that an idle connection holds only
// these few fields).
type clientConn struct {
	c      net.Conn
	dc     *deadlineConn
	remote string     // client IP, for X-Forwarded-For
	src    netip.Addr // the same, for flood control
	idle   atomic.Bool
	// served: a request was answered; busy: the last one came without a
	// park before it (within linger of the response before); woken: the
	// parker has just found it readable.
	served, busy, woken bool
	home                int       // the event loop (1-based) it was first adopted by; 0: none
	at                  time.Time // when the request under way began (its head's first byte)
	*connState
}

// connState is the memory a connection needs only while it has a request:
// taken from Server.bufs when one begins, given back when the connection
// is idle with nothing buffered.
type connState struct {
	rwBuffers
	req head
	res head
	out []byte

	// What became of the request, for its access log line: the session
	// (routing), the status sent, and "relayed" or the error kind of clb's
	// own answer.
	ss      session
	x       exchange // the request's way through the instances
	status  int
	outcome string
	line    accesslog.Line
	keep    bool // a refusal of clb's own left the connection open
}

func (s *Server) serveConn(c net.Conn) bool {
	src := sourceOf(c)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return false
	}
	if !s.admitConn(src) {
		s.mu.Unlock()
		s.o.Metrics.Error("http", "source_connection_limit")
		return false // closed at once (SPEC section 12)
	}
	cc := &clientConn{c: c, src: src}
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		cc.remote = host
	}
	s.conns[cc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if tc, ok := c.(*net.TCPConn); ok && s.loops.adopt(cc, tc, time.Now().Add(s.o.Limits.IdleTimeout)) {
		return true
	}
	go func() {
		if tc, ok := c.(*tls.Conn); ok {
			if !s.handshake(tc) {
				s.closeConn(cc)
				return
			}
			if s.h2 != nil && tc.ConnectionState().NegotiatedProtocol == "h2" {
				s.h2.serve(tc)
				s.closeConn(cc)
				return
			}
		}
		s.initClientConn(cc)
		s.run(cc, time.Now().Add(s.o.Limits.IdleTimeout))
	}()
	return true
}

// closeConn ends an accepted connection: out of the table, its slot and
// its source's count given back.
func (s *Server) closeConn(cc *clientConn) {
	s.mu.Lock()
	delete(s.conns, cc)
	s.releaseConn(cc.src)
	s.mu.Unlock()
	cc.c.Close()
	if cc.connState != nil {
		s.giveBuffers(cc)
	}
	<-s.slots
	s.wg.Done()
}

// run serves the requests of an accepted connection until it closes or is
// parked; idleEnd is when it has waited IdleTimeout for the next one.
func (s *Server) run(cc *clientConn, idleEnd time.Time) {
	for {
		switch s.await(cc, idleEnd) {
		case parked:
			return
		case gone:
			s.closeConn(cc)
			return
		}
		if !s.serveRequest(cc) {
			s.closeConn(cc)
			return
		}
		cc.served = true
		idleEnd = time.Now().Add(s.o.Limits.IdleTimeout)
	}
}

type awaited int

const (
	ready  awaited = iota // a request has begun
	gone                  // closed, timed out or shutting down: close it
	parked                // handed to the parker: the goroutine ends
)

// await waits for the first byte of the next request until idleEnd: when
// nothing is buffered, parked (buffers given back), after linger in the
// goroutine for the first request and a busy connection's.
func (s *Server) await(cc *clientConn, idleEnd time.Time) awaited {
	cc.idle.Store(true)
	canPark := s.park != nil
	for {
		if s.isClosing() {
			return gone
		}
		parking := canPark && !cc.woken && cc.br.Buffered() == 0
		if parking && cc.parkAtOnce() {
			if a, held := tlsPending(cc); held {
				cc.woken = false
				return a
			}
			if s.parkConn(cc, idleEnd) {
				return parked
			}
			canPark = false
			continue
		}
		// linger from when it went idle, told by idleEnd: no clock read
		// per request
		wait := s.o.Limits.IdleTimeout
		if parking {
			wait = min(wait, s.linger)
		}
		cc.dc.readFrom(idleEnd.Add(-s.o.Limits.IdleTimeout), wait)
		_, err := cc.br.Peek(1)
		switch {
		case err == nil:
			s.arrived(cc, idleEnd, time.Now())
			return ready
		case !parking || !isTimeout(err) || !time.Now().Before(idleEnd):
			return gone
		}
		if s.parkConn(cc, idleEnd) {
			return parked
		}
		canPark = false // wait the rest here
	}
}

// parkAtOnce: an idle connection with nothing buffered is parked without
// waiting linger when it has been served and is not busy.
func (cc *clientConn) parkAtOnce() bool { return cc.served && !cc.busy }

// arrived notes that the next request on cc, idle until idleEnd, began at
// now: whether the connection is busy.
func (s *Server) arrived(cc *clientConn, idleEnd, now time.Time) {
	if cc.served { // a gap between requests, not since connect
		// A woken one that spoke within linger of going idle is busy too:
		// else one park (a scheduling hiccup) would have it parked and
		// woken on every request after it, at about twice the CPU a
		// request (bench/http-vs-haproxy-nginx.sh).
		cc.busy = !cc.woken || now.Before(idleEnd.Add(s.linger-s.o.Limits.IdleTimeout))
	}
	cc.woken = false
}

// tlsPending says whether a TLS connection about to park holds the next
// request already (ready) or has failed (gone): crypto/tls reads every
// record a segment holds with the first, so a request pipelined behind the
// one served can be in its buffer rather than the socket's, where parking
// would never see it. A read whose deadline has passed takes it from there
// without a system call; held is false when there is nothing (or the
// connection is not TLS), and the connection may park.
func tlsPending(cc *clientConn) (a awaited, held bool) {
	if _, ok := cc.c.(*tls.Conn); !ok {
		return a, false
	}
	cc.dc.readFrom(pastDeadline, 1)
	_, err := cc.br.Peek(1)
	switch {
	case err == nil:
		return ready, true
	case isTimeout(err):
		return a, false
	}
	return gone, true
}

// pastDeadline is a moment long gone: a read bounded by it does not wait.
var pastDeadline = time.Unix(1, 0)

// parkConn hands cc, idle with nothing buffered, to the parker until
// idleEnd; false: it could not be parked, and is as it was.
func (s *Server) parkConn(cc *clientConn, idleEnd time.Time) bool {
	s.giveBuffers(cc)
	expire := func() { s.closeConn(cc) }
	// A plain socket is parked detached: Go's descriptor for it (and
	// cc's wrapper of it) are given back too. A TLS one keeps its
	// net.Conn (crypto/tls's state stays on it).
	c, dc := cc.c, cc.dc
	s.setConn(cc, detachedConn{})
	cc.dc = nil
	err := s.park.ParkDetached(c, idleEnd, func(nc net.Conn) { s.woken(cc, nc, idleEnd) }, expire)
	if err != nil {
		s.setConn(cc, c)
		cc.dc = dc
	}
	if errors.Is(err, netpark.ErrUnsupported) {
		err = s.park.Park(cc.c, idleEnd, func() {
			go s.wake(cc, idleEnd)
		}, expire)
	}
	if err == nil {
		return true
	}
	s.takeBuffers(cc)
	return false
}

// woken serves a connection parked detached that the parker found
// readable, as nc: in an event loop where there are loops, else in a
// goroutine of its own.
func (s *Server) woken(cc *clientConn, nc net.Conn, idleEnd time.Time) {
	cc.woken = true
	if tc, ok := nc.(*net.TCPConn); ok && s.loops.adopt(cc, tc, idleEnd) {
		return
	}
	go func() {
		s.reattach(cc, nc)
		s.wake(cc, idleEnd)
	}()
}

// carryOn goes on with a connection an event loop handed to a goroutine
// once its request is done (keep: the connection stays open): back to a
// loop when nothing of a next request is buffered, else served here.
func (s *Server) carryOn(cc *clientConn, keep bool) {
	if !keep {
		s.closeConn(cc)
		return
	}
	cc.served = true
	idleEnd := time.Now().Add(s.o.Limits.IdleTimeout)
	if tc, ok := cc.c.(*net.TCPConn); ok && cc.br.Buffered() == 0 {
		s.giveBuffers(cc)
		if s.loops.adopt(cc, tc, idleEnd) {
			return
		}
		s.takeBuffers(cc)
	}
	s.run(cc, idleEnd)
}

// initClientConn gives cc its deadlines and buffers.
func (s *Server) initClientConn(cc *clientConn) {
	cc.dc = newDeadlineConn(cc.c)
	cc.dc.writeProgress(time.Time{}, s.o.Limits.WriteTimeout)
	s.takeBuffers(cc)
}

// wake serves a connection the parker found readable: it reads before it
// may park again.
func (s *Server) wake(cc *clientConn, idleEnd time.Time) {
	cc.woken = true
	s.takeBuffers(cc)
	s.run(cc, idleEnd)
}

// reattach gives a connection woken from ParkDetached its new net.Conn.
func (s *Server) reattach(cc *clientConn, nc net.Conn) {
	s.setConn(cc, nc)
	cc.dc = newDeadlineConn(nc)
	cc.dc.writeProgress(time.Time{}, s.o.Limits.WriteTimeout)
}

// setConn changes cc.c, which shutdown reads under s.mu.
func (s *Server) setConn(cc *clientConn, c net.Conn) {
	s.mu.Lock()
	cc.c = c
	s.mu.Unlock()
}

// detachedConn stands for the net.Conn of a connection parked detached
// (the Parker has its socket): closing it does nothing, the rest fails.
type detachedConn struct{}

var _ net.Conn = detachedConn{}

func (detachedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (detachedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (detachedConn) Close() error                     { return nil }
func (detachedConn) LocalAddr() net.Addr              { return nil }
func (detachedConn) RemoteAddr() net.Addr             { return nil }
func (detachedConn) SetDeadline(time.Time) error      { return net.ErrClosed }
func (detachedConn) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (detachedConn) SetWriteDeadline(time.Time) error { return net.ErrClosed }

func (s *Server) takeBuffers(cc *clientConn) {
	cc.connState = s.bufs.Get().(*connState)
	cc.attach(cc.dc)
}

// giveBuffers returns cc's connState, with what its buffers grew to;
// anything the reader or writer still holds is dropped.
func (s *Server) giveBuffers(cc *clientConn) {
	st := cc.connState
	cc.connState = nil
	st.detach()
	st.ss = session{} // nothing of the last request stays referenced
	st.line.Reset(false)
	s.bufs.Put(st)
}

// newClientConn is a connection that is not accepted (an HTTP/2 stream's):
// no slot, not in the connection table, not counted against its source.
func (s *Server) newClientConn(c net.Conn, src netip.Addr) *clientConn {
	cc := &clientConn{c: c, src: src}
	s.initClientConn(cc)
	return cc
}

// now is the time of the request on cc, by Options.Now.
func (s *Server) now(cc *clientConn) time.Time {
	if s.realClock {
		return cc.at
	}
	return s.o.Now()
}

// isClosing is read after cc.idle is set, and shutdown reads each idle flag
// after setting closing: with both atomic, either the request sees closing
// or shutdown sees the connection idle and closes it.
func (s *Server) isClosing() bool { return s.closing.Load() }

// serveRequest reads one request and answers it; false closes the
// connection.
func (s *Server) serveRequest(cc *clientConn) bool { return s.serveRequestFrom(cc, time.Now()) }

// serveRequestFrom is serveRequest for a request whose first byte came at
// at.
func (s *Server) serveRequestFrom(cc *clientConn, at time.Time) bool {
	l := s.o.Limits
	r, logged := s.startRequest(cc, at)
	err := readHead(cc.br, &cc.req, l.MaxHeaderBytes, l.MaxHeaders, true)
	return s.headRead(cc, r, logged, err)
}

// startRequest begins a request whose first byte came at at: r and logged
// are for its access log line.
func (s *Server) startRequest(cc *clientConn, at time.Time) (r request, logged bool) {
	cc.idle.Store(false)
	// When the request began: its deadlines, routing, the pool and the
	// access log take the time from here rather than read the clock again
	// (a head already in the buffer arms no deadline at all).
	cc.at = at
	cc.dc.readFrom(cc.at, s.o.Limits.ReadHeaderTimeout)
	// The last request's key and CLBROUTE point into the head about to be
	// read over: nothing reads them once it is.
	cc.ss.key, cc.ss.last = sessionKey{}, ""
	if logged = s.o.Access.On(); logged {
		r = s.beginRequest(cc)
	}
	return r, logged
}

// headRead answers the request whose head readHead read with err.
func (s *Server) headRead(cc *clientConn, r request, logged bool, err error) bool {
	cc.dc.readProgress(time.Time{}, s.o.Limits.IdleTimeout) // body: no progress for IdleTimeout
	if err != nil {
		var eh *errHead
		if errors.As(err, &eh) {
			s.o.Metrics.Request("http", "other", "", "refused")
			s.o.Metrics.Error("http", "malformed_request")
			cc.outcome = "malformed_request"
			s.refuse(cc, eh.status, eh.msg)
			s.endRequest(cc, r, logged)
		}
		return false
	}
	keep := s.proxy(cc)
	s.endRequest(cc, r, logged)
	return keep
}

// endRequest writes the access log line of a request begun with
// startRequest.
func (s *Server) endRequest(cc *clientConn, r request, logged bool) {
	if logged {
		s.logRequest(cc, r)
	}
}

// refuse answers with a short error response and closes the connection: the
// rest of what the client sent cannot be trusted to be framed right.
func (s *Server) refuse(cc *clientConn, status int, msg string, extra ...string) {
	s.answer(cc, status, msg, false, extra...)
}

// answer writes a short response of clb's own: with Connection: close
// unless keep (the connection serves the next request).
func (s *Server) answer(cc *clientConn, status int, msg string, keep bool, extra ...string) {
	cc.status = status
	cc.out = appendError(cc.out[:0], status, msg, keep, extra...)
	_, _ = cc.bw.Write(cc.out)
	_ = cc.bw.Flush()
}

func appendError(dst []byte, status int, msg string, keep bool, extra ...string) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(status)...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	if !keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	for _, e := range extra {
		dst = append(dst, e...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)+1), 10)
	dst = append(dst, "\r\n\r\n"...)
	dst = append(dst, msg...)
	return append(dst, '\n')
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Error"
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
