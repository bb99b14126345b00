package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/config"
)

// maxMessage bounds a SIP message: a UDP datagram's payload, and what a TCP
// connection may buffer for one message.
const maxMessage = 65535

// ServerOptions configure a Server.
type ServerOptions struct {
	ProxyOptions
	// Listen are the addresses of listen.sip.
	Listen []config.SIPAddr
	// Readers is how many goroutines read each UDP socket; 0 means 1.
	// Measured with SIPp at 8,000 calls/s, two readers on one socket cost
	// 40% more CPU per call than one (wake-ups and contention), and one
	// reader handles ~25,000 calls/s.
	Readers int
	// DialTimeout bounds opening a TCP connection; 0 means 2 s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing a message to a TCP connection; 0 means 2 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a TCP connection that has carried nothing for this
	// long; 0 means 10 minutes.
	IdleTimeout time.Duration
	// MaxConns bounds the TCP connections, both ways; 0 means 10,000.
	MaxConns int
}

// Server runs the proxy on clb's SIP listeners: UDP sockets read by several
// goroutines, TCP listeners with a goroutine per connection, and TCP
// connections to instances opened on demand.
//
// It uses sipgo's parser and message model, not its transport layer: that
// keeps every UDP source address it has ever seen in two maps that are never
// pruned (memory grows with the number of distinct clients), reads each
// socket on one goroutine, and re-serialises what it forwards. A stateless
// proxy needs none of its connection management for UDP and only this much of
// it for TCP.
type Server struct {
	proxy *Proxy
	log   *zap.Logger
	opts  ServerOptions

	udp []*udpListener
	tcp []*tcpListener

	mu      sync.Mutex // guards conns, dialing and closed
	conns   map[netip.AddrPort]*tcpConn
	dialing map[netip.AddrPort]chan struct{}
	closed  bool

	wg sync.WaitGroup
}

type udpListener struct {
	conn *net.UDPConn
	self endpoint
}

type tcpListener struct {
	ln   *net.TCPListener
	self endpoint
}

// NewServer binds the listeners (so that port 0 is resolved) but serves
// nothing until Serve.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Readers <= 0 {
		o.Readers = 1
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 2 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 10_000
	}
	s := &Server{
		log:     o.Logger,
		opts:    o,
		conns:   map[netip.AddrPort]*tcpConn{},
		dialing: map[netip.AddrPort]chan struct{}{},
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	for _, a := range o.Listen {
		if err := s.bind(a); err != nil {
			s.closeListeners()
			return nil, err
		}
	}
	s.proxy = newProxy(o.ProxyOptions, s)
	return s, nil
}

func (s *Server) bind(a config.SIPAddr) error {
	ip, err := netip.ParseAddr(a.Host)
	if err != nil {
		return fmt.Errorf("sip: listen %s: the host must be an IP address", a)
	}
	addr := netip.AddrPortFrom(ip, uint16(a.Port))
	switch a.Transport {
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return fmt.Errorf("sip: %w", err)
		}
		_ = c.SetReadBuffer(4 << 20) // absorb bursts; the kernel may cap it
		_ = c.SetWriteBuffer(4 << 20)
		s.udp = append(s.udp, &udpListener{conn: c, self: endpoint{"udp", localAddr(c.LocalAddr())}})
	case "tcp":
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		if err != nil {
			return fmt.Errorf("sip: %w", err)
		}
		s.tcp = append(s.tcp, &tcpListener{ln: ln, self: endpoint{"tcp", localAddr(ln.Addr())}})
	default:
		return fmt.Errorf("sip: listen %s: transport %q not supported", a, a.Transport)
	}
	return nil
}

func localAddr(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Reload swaps in the key rules and instances of a reloaded configuration;
// messages being handled finish with the ones they started with.
func (s *Server) Reload(rules []config.Rule, instances []config.Instance) {
	s.proxy.reload(rules, instances)
}

// SetInstances swaps in the instance list (a membership subscriber); SetRules
// the key rules of a reloaded configuration. Messages being handled finish
// with the ones they started with.
func (s *Server) SetInstances(instances []config.Instance) { s.proxy.setInstances(instances) }

// SetRules: see SetInstances.
func (s *Server) SetRules(rules []config.Rule) { s.proxy.setRules(rules) }

// Listeners are the bound addresses, as transport://host:port.
func (s *Server) Listeners() []string {
	var out []string
	for _, l := range s.udp {
		out = append(out, "udp://"+l.self.addr.String())
	}
	for _, l := range s.tcp {
		out = append(out, "tcp://"+l.self.addr.String())
	}
	return out
}

// Serve handles messages until ctx ends, then closes every socket and
// returns when all its goroutines have stopped.
func (s *Server) Serve(ctx context.Context) error {
	for _, l := range s.udp {
		for range s.opts.Readers {
			s.wg.Go(func() { s.readUDP(l) })
		}
	}
	for _, l := range s.tcp {
		s.wg.Go(func() { s.accept(l) })
	}
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	conns := make([]*tcpConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.closeListeners()
	for _, c := range conns {
		c.c.Close()
	}
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range s.udp {
		l.conn.Close()
	}
	for _, l := range s.tcp {
		l.ln.Close()
	}
}

func (s *Server) readUDP(l *udpListener) {
	buf := make([]byte, maxMessage)
	var sc scratch
	for {
		n, src, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("udp read", zap.Error(err))
			continue
		}
		if n == 0 || isKeepAlive(buf[:n]) {
			continue
		}
		in := inbound{data: buf[:n], local: l.self, src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port())}
		s.proxy.handle(&in, &sc)
	}
}

// isKeepAlive reports a datagram of only CR and LF (RFC 5626 keep-alive).
func isKeepAlive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// send implements sender.
func (s *Server) send(dst destination, data []byte) error {
	if dst.conn != nil {
		if err := dst.conn.write(data); err == nil {
			return nil
		}
		// The connection is gone: open another to the Via (RFC 3261 18.2.2).
	}
	switch dst.transport {
	case "udp":
		l, ok := pick(s.udp, udpSelf, dst.addr.Addr())
		if !ok {
			return fmt.Errorf("no UDP listener for %s", dst.addr)
		}
		_, err := l.conn.WriteToUDPAddrPort(data, dst.addr)
		return err
	case "tcp":
		c, err := s.dial(dst.addr)
		if err != nil {
			return err
		}
		return c.write(data)
	}
	return fmt.Errorf("transport %q not supported", dst.transport)
}

// pick is the listener a message to "to" leaves from, and so the one clb's
// Via names: the first of to's address family, else the first.
func pick[L *udpListener | *tcpListener](ls []L, self func(L) endpoint, to netip.Addr) (L, bool) {
	for _, l := range ls {
		if self(l).addr.Addr().Is4() == to.Unmap().Is4() {
			return l, true
		}
	}
	if len(ls) > 0 {
		return ls[0], true
	}
	return nil, false
}

func udpSelf(l *udpListener) endpoint { return l.self }
func tcpSelf(l *tcpListener) endpoint { return l.self }

// listener implements sender.
func (s *Server) listener(transport string, to netip.Addr) (endpoint, bool) {
	switch transport {
	case "udp":
		if l, ok := pick(s.udp, udpSelf, to); ok {
			return l.self, true
		}
	case "tcp":
		if l, ok := pick(s.tcp, tcpSelf, to); ok {
			return l.self, true
		}
	}
	return endpoint{}, false
}

// isSelf implements sender.
func (s *Server) isSelf(a netip.AddrPort) bool {
	for _, l := range s.udp {
		if l.self.addr == a {
			return true
		}
	}
	for _, l := range s.tcp {
		if l.self.addr == a {
			return true
		}
	}
	return false
}
