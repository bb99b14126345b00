package httpproxy

import (
	"bufio"
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
	}
	s.pool.tls = o.TLS
	if s.pool.tls == nil {
		s.pool.tls = &certs.Store{} // the system's roots
	}
	s.flood.Store(newFlood(o.FloodLimits))
	s.Reload(o.Rules)
	if scheme == "https" {
		s.h2 = newH2Server(s)
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

// clientConn is one client connection and its reusable memory.
type clientConn struct {
	c      net.Conn
	dc     *deadlineConn
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string     // client IP, for X-Forwarded-For
	src    netip.Addr // the same, for flood control
	idle   atomic.Bool
	at     time.Time // when the request under way began (its head's first byte)
	req    head
	res    head
	out    []byte

	// What became of the request, for its access log line: the session
	// (routing), the status sent, and "relayed" or the error kind of clb's
	// own answer.
	ss      session
	x       exchange // the request's way through the instances
	status  int
	outcome string
	line    accesslog.Line
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
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.conns, cc)
			s.releaseConn(src)
			s.mu.Unlock()
			c.Close()
			<-s.slots
			s.wg.Done()
		}()
		if tc, ok := c.(*tls.Conn); ok {
			if !s.handshake(tc) {
				return
			}
			if s.h2 != nil && tc.ConnectionState().NegotiatedProtocol == "h2" {
				s.h2.serve(tc)
				return
			}
		}
		s.initClientConn(cc)
		for s.serveRequest(cc) {
		}
	}()
	return true
}

// initClientConn gives cc its deadlines and buffers.
func (s *Server) initClientConn(cc *clientConn) {
	l := s.o.Limits
	cc.dc = newDeadlineConn(cc.c)
	cc.dc.writeProgress(time.Time{}, l.WriteTimeout)
	cc.br = bufio.NewReaderSize(cc.dc, max(l.MaxHeaderBytes, 4096))
	cc.bw = bufio.NewWriterSize(cc.dc, 16<<10)
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
func (s *Server) serveRequest(cc *clientConn) bool {
	l := s.o.Limits
	cc.idle.Store(true)
	if s.isClosing() {
		return false
	}
	cc.dc.readFrom(time.Now(), l.IdleTimeout)
	if _, err := cc.br.Peek(1); err != nil {
		return false
	}
	cc.idle.Store(false)
	// When the request began: its deadlines, routing, the pool and the
	// access log take the time from here rather than read the clock again
	// (a head already in the buffer arms no deadline at all).
	cc.at = time.Now()
	cc.dc.readFrom(cc.at, l.ReadHeaderTimeout)
	logged := s.o.Access.On()
	var r request
	if logged {
		r = s.beginRequest(cc)
	}
	err := readHead(cc.br, &cc.req, l.MaxHeaderBytes, l.MaxHeaders, true)
	cc.dc.readProgress(time.Time{}, l.IdleTimeout) // body: no progress for IdleTimeout
	if err != nil {
		var eh *errHead
		if errors.As(err, &eh) {
			s.o.Metrics.Request("http", "other", "", "refused")
			s.o.Metrics.Error("http", "malformed_request")
			cc.outcome = "malformed_request"
			s.refuse(cc, eh.status, eh.msg)
			if logged {
				s.logRequest(cc, r)
			}
		}
		return false
	}
	keep := s.proxy(cc)
	if logged {
		s.logRequest(cc, r)
	}
	return keep
}

// refuse answers with a short error response and closes the connection: the
// rest of what the client sent cannot be trusted to be framed right.
func (s *Server) refuse(cc *clientConn, status int, msg string, extra ...string) {
	cc.status = status
	cc.out = appendError(cc.out[:0], status, msg, extra...)
	_, _ = cc.bw.Write(cc.out)
	_ = cc.bw.Flush()
}

func appendError(dst []byte, status int, msg string, extra ...string) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(status)...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"...)
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
