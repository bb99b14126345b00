package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/certs"
	"clb/config"
	"clb/sip/framing"
)

// maxMessage bounds a SIP message: a UDP datagram's payload, and what a
// stream connection may buffer for one message.
const maxMessage = framing.MaxMessage

// ServerOptions configure a Server.
type ServerOptions struct {
	ProxyOptions
	// Listen are the addresses of listen.sip.
	Listen []config.SIPAddr
	// Readers is how many sockets serve each UDP listener, sharing its
	// address (SO_REUSEPORT, Linux), each with its own reader goroutine;
	// 0 means one per CPU clb may use (GOMAXPROCS), at most maxReaders,
	// on Linux, and 1 elsewhere. One reader is one core at most: under a
	// flood on a machine with more, the kernel dropped datagrams at the
	// socket (legitimate ones too) while the other cores idled. The
	// kernel puts every datagram on the first socket while its reader
	// keeps up (fewer wake-ups per datagram), and spreads peers among all
	// of them by address under load (steer.go), so that one peer's
	// datagrams keep their order but at a switch, and a flooding source
	// fills one queue.
	Readers int
	// DialTimeout bounds opening a TCP connection; 0 means 2 s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing a message to a TCP connection; 0 means 2 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a TCP connection that has carried nothing for this
	// long; 0 means 10 minutes.
	IdleTimeout time.Duration
	// MessageTimeout bounds receiving one message once its first byte has
	// come, so that a client that trickles a message (or never ends it)
	// cannot hold a connection for IdleTimeout per byte; 0 means 10 s.
	MessageTimeout time.Duration
	// MaxConns bounds the TCP connections, both ways; 0 means 10,000 (and
	// as many again over TLS).
	MaxConns int
	// TLS, if set, is the material of the tls:// transport: the listeners'
	// certificate (and client CA), and the trust put in instances dialed
	// over TLS. Without it a tls:// listener is refused and nothing is
	// sent over TLS. It is also the wss:// listeners' material.
	TLS *certs.Store
	// WS is the ws section: the ws:// and wss:// listeners' Origin check,
	// connection bound, pings, idle timeout and message bound; a zero
	// MaxConnections, IdleTimeout or MaxMessage takes config.DefaultWS's,
	// a zero PingInterval sends no pings.
	WS config.WS
	// FlowKey is tls.flow_key, the secret of the flow tokens of WebSocket
	// clients; "" makes a random one.
	FlowKey string
}

// Server runs the proxy on clb's SIP transports: UDP sockets read by several
// goroutines, TCP and TLS listeners with a goroutine per connection, and TCP
// and TLS connections to instances opened on demand. It is the proxy's sender: it
// hands a message to the transport its destination names.
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

	// transports are every transport clb has, in the order Listeners lists
	// them, found by name; one without listeners sends nothing.
	transports []transport
	// flows makes and checks the WebSocket transports' flow tokens.
	flows *flowKey

	wg sync.WaitGroup
}

// NewServer binds the listeners (so that port 0 is resolved) but serves
// nothing until Serve.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Readers <= 0 {
		o.Readers = defaultReaders()
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
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = 10 * time.Second
	}
	o.WS = wsDefaults(o.WS)
	s := &Server{log: o.Logger, opts: o, flows: newFlowKey(o.FlowKey)}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.proxy = newProxy(o.ProxyOptions, s)
	stream := streamOptions{dialTimeout: o.DialTimeout, writeTimeout: o.WriteTimeout, idleTimeout: o.IdleTimeout, messageTimeout: o.MessageTimeout, maxConns: o.MaxConns}
	s.transports = []transport{
		newUDPTransport(s.proxy, s.log, o.Readers, &s.wg),
		newStreamTransport("tcp", tcpNetwork{}, s.proxy, s.log, stream, &s.wg),
	}
	ws := wsOptions{writeTimeout: o.WriteTimeout, messageTimeout: o.MessageTimeout}
	s.transports = append(s.transports, newWSTransport("ws", tcpNetwork{}, s.proxy, s.log, ws, o.WS, s.flows, &s.wg))
	if o.TLS != nil {
		s.transports = append(s.transports,
			newStreamTransport("tls", tlsNetwork{o.TLS}, s.proxy, s.log, stream, &s.wg),
			newWSTransport("wss", tlsNetwork{o.TLS}, s.proxy, s.log, ws, o.WS, s.flows, &s.wg))
	}
	for _, a := range o.Listen {
		if err := s.bind(a); err != nil {
			s.closeTransports()
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) bind(a config.SIPAddr) error {
	ip, err := netip.ParseAddr(a.Host)
	if err != nil {
		return fmt.Errorf("sip: listen %s: the host must be an IP address", a)
	}
	t := s.transport(a.Transport)
	if t == nil {
		return fmt.Errorf("sip: listen %s: transport %q not supported", a, a.Transport)
	}
	listen := t.listen
	if w, ok := t.(*wsTransport); ok {
		listen = func(addr netip.AddrPort) error { return w.listenPath(addr, a.Path) }
	}
	if err := listen(netip.AddrPortFrom(ip, uint16(a.Port))); err != nil {
		return fmt.Errorf("sip: %w", err)
	}
	return nil
}

// transport is the transport named name (a Via token, lower case), or nil.
func (s *Server) transport(name string) transport {
	for _, t := range s.transports {
		if t.name() == name {
			return t
		}
	}
	return nil
}

func localAddr(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return localAddrPort(ap)
}

// localAddrPort is addr as a listener's endpoint names it: an IPv4-mapped
// address as IPv4.
func localAddrPort(addr netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
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

// SetLimits swaps in the flood control of a reloaded configuration; the
// sources' buckets start anew.
func (s *Server) SetLimits(l config.Limits) { s.proxy.flood.Store(newFlood(l)) }

// SetWS swaps in the ws section of a reloaded configuration: new
// handshakes check the new origins, the connection bound applies to new
// connections, and pings, idle timeout and message bound to open ones
// once their current wait for a frame ends.
func (s *Server) SetWS(w config.WS) {
	w = wsDefaults(w)
	for _, t := range s.transports {
		if ws, ok := t.(*wsTransport); ok {
			ws.ws.Store(&w)
		}
	}
}

// wsDefaults fills the zero fields of w with config.DefaultWS's.
func wsDefaults(w config.WS) config.WS {
	def := config.DefaultWS()
	if w.MaxConnections <= 0 {
		w.MaxConnections = def.MaxConnections
	}
	if w.IdleTimeout <= 0 {
		w.IdleTimeout = def.IdleTimeout
	}
	if w.PingInterval < 0 || w.PingInterval >= w.IdleTimeout {
		w.PingInterval = 0
	}
	if w.MaxMessage <= 0 || w.MaxMessage > maxMessage {
		w.MaxMessage = maxMessage
	}
	return w
}

// SetRules: see SetInstances.
func (s *Server) SetRules(rules []config.Rule) { s.proxy.setRules(rules) }

// Listeners are the bound addresses, as transport://host:port.
func (s *Server) Listeners() []string {
	var out []string
	for _, t := range s.transports {
		for _, self := range t.selves() {
			out = append(out, t.name()+"://"+self.addr.String())
		}
	}
	return out
}

// Serve handles messages until ctx ends, then closes every socket and
// returns when all its goroutines have stopped.
func (s *Server) Serve(ctx context.Context) error {
	for _, t := range s.transports {
		t.serve()
	}
	<-ctx.Done()
	s.closeTransports()
	s.wg.Wait()
	return nil
}

func (s *Server) closeTransports() {
	for _, t := range s.transports {
		t.close()
	}
}

// send implements sender.
func (s *Server) send(dst destination, data []byte) error {
	if dst.conn != nil {
		if err := dst.conn.write(data); err == nil {
			return nil
		}
		// The connection is gone: open another to the Via (RFC 3261 18.2.2).
	}
	t := s.transport(dst.transport)
	if t == nil {
		return fmt.Errorf("transport %q not supported", dst.transport)
	}
	return t.send(dst.addr, data)
}

// listener implements sender.
func (s *Server) listener(transport string, to netip.Addr) (endpoint, bool) {
	t := s.transport(transport)
	if t == nil {
		return endpoint{}, false
	}
	selves := t.selves()
	i := pick(selves, to)
	if i < 0 {
		return endpoint{}, false
	}
	return selves[i], true
}

// isSelf implements sender.
func (s *Server) isSelf(a netip.AddrPort) bool {
	for _, t := range s.transports {
		for _, self := range t.selves() {
			if self.addr == a {
				return true
			}
		}
	}
	return false
}

// hasPort implements sender.
func (s *Server) hasPort(port uint16) bool {
	for _, t := range s.transports {
		for _, self := range t.selves() {
			if self.addr.Port() == port {
				return true
			}
		}
	}
	return false
}

// connWith implements sender: the open connection with remote on the
// transport named transport.
func (s *Server) connWith(transport string, remote netip.AddrPort) conn {
	if t := s.transport(transport); t != nil {
		return t.connWith(remote)
	}
	return nil
}

// flow implements sender.
func (s *Server) flow(transport, token string) (destination, flowState) {
	t, _ := s.transport(transport).(*wsTransport)
	if t == nil {
		return destination{}, flowForged
	}
	f, ok := s.flows.parse(transport, token)
	if !ok {
		return destination{}, flowForged
	}
	c := t.byFlow(f)
	if c == nil {
		return destination{}, flowGone
	}
	return destination{endpoint: endpoint{transport, c.remote}, conn: c}, flowOpen
}
