package sip

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"clb/accesslog"
	"clb/balancer"
	"clb/certs"
	"clb/certs/certstest"
	"clb/config"
	"clb/loadfactor"
)

// wait bounds every wait for a message in these tests: a message that does
// not come within it is a failure, not a reason to sleep longer.
const wait = 5 * time.Second

// peer is a SIP endpoint of a test (a phone, or an instance) on a real
// loopback socket: it sends sipgo messages and queues what it receives.
type peer struct {
	t         testing.TB
	name      string
	transport string
	addr      netip.AddrPort
	udp       *net.UDPConn
	tcp       net.Listener
	inbox     chan envelope

	// tlsClient, for a "tls" peer, is how it dials (its listener has its
	// server configuration).
	tlsClient *tls.Config

	mu    sync.Mutex
	conns map[netip.AddrPort]net.Conn // TCP or TLS, by remote
}

// envelope is a message a peer received.
type envelope struct {
	at  string        // the peer's name
	msg gosip.Message // nil if sipgo cannot parse it
	raw []byte        // as received
}

// newPeer starts a peer; its messages go to inbox, or to its own queue if
// inbox is nil.
func newPeer(t testing.TB, name, transport string, inbox chan envelope) *peer {
	t.Helper()
	return newPeerAt(t, name, transport, "127.0.0.1", inbox)
}

// newPeerAt is newPeer on another loopback address (127.0.0.0/8 is all
// local), so that a test can have sources clb tells apart.
func newPeerAt(t testing.TB, name, transport, ip string, inbox chan envelope) *peer {
	t.Helper()
	return newPeerTLS(t, name, transport, ip, inbox, nil, nil)
}

// newPeerTLS is newPeerAt for any transport; a "tls" peer listens with
// server and dials with client.
func newPeerTLS(t testing.TB, name, transport, ip string, inbox chan envelope, server, client *tls.Config) *peer {
	t.Helper()
	if inbox == nil {
		inbox = make(chan envelope, 1024)
	}
	p := &peer{t: t, name: name, transport: transport, inbox: inbox, conns: map[netip.AddrPort]net.Conn{}, tlsClient: client}
	switch transport {
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
		if err != nil {
			t.Fatal(err)
		}
		p.udp, p.addr = c, localAddr(c.LocalAddr())
		go p.readUDP()
	case "tcp":
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		p.tcp, p.addr = ln, localAddr(ln.Addr())
		go p.accept()
	case "tls":
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		p.tcp, p.addr = tls.NewListener(ln, server), localAddr(ln.Addr())
		go p.accept()
	}
	t.Cleanup(p.close)
	return p
}

func (p *peer) close() {
	if p.udp != nil {
		p.udp.Close()
	}
	if p.tcp != nil {
		p.tcp.Close()
	}
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *peer) readUDP() {
	buf := make([]byte, maxMessage)
	for {
		n, _, err := p.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		raw := bytes.Clone(buf[:n])
		m, _ := gosip.ParseMessage(raw) // nil if clb sent what sipgo refuses
		p.inbox <- envelope{p.name, m, raw}
	}
}

func (p *peer) accept() {
	for {
		c, err := p.tcp.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[localAddr(c.RemoteAddr())] = c
		p.mu.Unlock()
		go p.readTCP(c)
	}
}

func (p *peer) readTCP(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		var head bytes.Buffer
		length := 0
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
			if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "content-length") {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		head.Write(body)
		if m, err := gosip.ParseMessage(head.Bytes()); err == nil {
			p.inbox <- envelope{p.name, m, head.Bytes()}
		}
	}
}

// send puts m on the wire to to, over the peer's transport.
func (p *peer) send(m gosip.Message, to netip.AddrPort) {
	p.t.Helper()
	p.sendRaw([]byte(m.String()), to)
}

func (p *peer) sendRaw(data []byte, to netip.AddrPort) {
	p.t.Helper()
	if p.udp != nil {
		if _, err := p.udp.WriteToUDPAddrPort(data, to); err != nil {
			p.t.Fatal(err)
		}
		return
	}
	p.mu.Lock()
	c := p.conns[to]
	p.mu.Unlock()
	if c == nil {
		var err error
		if p.tlsClient != nil {
			c, err = tls.Dial("tcp", to.String(), p.tlsClient)
		} else {
			c, err = net.Dial("tcp", to.String())
		}
		if err != nil {
			p.t.Fatal(err)
		}
		p.mu.Lock()
		p.conns[to] = c
		p.mu.Unlock()
		go p.readTCP(c)
	}
	if _, err := c.Write(data); err != nil {
		p.t.Fatal(err)
	}
}

// recv is the next message the peer received (for peers sharing an inbox,
// the next any of them received: it must be this one's).
func (p *peer) recv() gosip.Message {
	p.t.Helper()
	e := p.recvEnvelope()
	if e.msg == nil {
		p.t.Fatalf("%s: got what sipgo cannot parse:\n%s", p.name, e.raw)
	}
	return e.msg
}

func (p *peer) recvEnvelope() envelope {
	p.t.Helper()
	select {
	case e := <-p.inbox:
		if e.at != p.name {
			p.t.Fatalf("want a message at %s, %s got:\n%s", p.name, e.at, e.msg)
		}
		return e
	case <-time.After(wait):
		p.t.Fatalf("%s: no message within %v", p.name, wait)
		return envelope{}
	}
}

func (p *peer) recvRequest(method string) *gosip.Request {
	p.t.Helper()
	m := p.recv()
	req, ok := m.(*gosip.Request)
	if !ok || string(req.Method) != method {
		p.t.Fatalf("%s: want a %s request, got:\n%s", p.name, method, m)
	}
	return req
}

func (p *peer) recvResponse(code int) *gosip.Response {
	p.t.Helper()
	m := p.recv()
	res, ok := m.(*gosip.Response)
	if !ok || res.StatusCode != code {
		p.t.Fatalf("%s: want a %d response, got:\n%s", p.name, code, m)
	}
	return res
}

// uri is the peer's contact URI.
func (p *peer) uri(user string) gosip.Uri {
	u := gosip.Uri{Scheme: "sip", User: user, Host: p.addr.Addr().String(), Port: int(p.addr.Port())}
	if p.transport != "udp" {
		u.UriParams = gosip.HeaderParams{{K: "transport", V: p.transport}}
	}
	return u
}

// cluster is clb on loopback in front of instances that are test peers.
type cluster struct {
	t         *testing.T
	inbox     chan envelope // every instance's
	server    *Server
	bal       *balancer.Balancer
	instances map[string]*peer
	names     []string
	udp, tcp  netip.AddrPort // clb's listeners
	tls       netip.AddrPort // clb's TLS listener, with clusterOptions.tls
	ws, wss   netip.AddrPort // clb's WebSocket listeners, with clusterOptions.ws
	// ca signed clb's and the TLS peers' certificates (with
	// clusterOptions.tls).
	ca *certstest.CA
	// stop ends Serve and waits for it (also done at the test's end).
	stop func()
}

type clusterOptions struct {
	n         int    // instances
	transport string // the instances' transport
	rules     []config.Rule
	readers   int
	now       func() time.Time
	limits    config.Limits
	// messageTimeout is the stream transports' (0: the default).
	messageTimeout time.Duration
	access         *accesslog.Log
	// tls adds a TLS listener to clb (needed for transport "tls"), with a
	// certificate of a test CA for 127.0.0.1.
	tls bool
	// The stream transports' idle timeout, connection bound and linger
	// before parking (0: the defaults; linger is the WebSocket ones' too).
	idleTimeout time.Duration
	maxConns    int
	linger      time.Duration
	// ws adds a ws:// listener at path /sip (and, with tls, a wss:// one)
	// with these settings.
	ws *config.WS
}

func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	if o.transport == "" {
		o.transport = "udp"
	}
	c := &cluster{t: t, instances: map[string]*peer{}, inbox: make(chan envelope, 4096)}
	listen := []config.SIPAddr{
		{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1"}},
		{Endpoint: config.Endpoint{Transport: "tcp", Host: "127.0.0.1"}},
	}
	var store *certs.Store
	if o.tls || o.transport == "tls" {
		c.ca = certstest.NewCA(t, "test CA")
		store = c.newStore("clb")
		listen = append(listen, config.SIPAddr{Endpoint: config.Endpoint{Transport: "tls", Host: "127.0.0.1"}})
	}
	if o.ws != nil {
		listen = append(listen, config.SIPAddr{Endpoint: config.Endpoint{Transport: "ws", Host: "127.0.0.1", Path: "/sip"}})
		if store != nil {
			listen = append(listen, config.SIPAddr{Endpoint: config.Endpoint{Transport: "wss", Host: "127.0.0.1", Path: "/sip"}})
		}
	}
	var in []config.Instance
	for i := range o.n {
		name := fmt.Sprintf("inst%d", i+1)
		p := c.newPeer(name, o.transport, "127.0.0.1")
		c.instances[name], c.names = p, append(c.names, name)
		in = append(in, config.Instance{Name: name, Weight: 100, SIP: config.SIPAddr{Endpoint: config.Endpoint{
			Transport: o.transport, Host: "127.0.0.1", Port: int(p.addr.Port())}}})
	}
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	c.bal = bal
	var ws config.WS
	if o.ws != nil {
		ws = *o.ws
	}
	srv, err := NewServer(ServerOptions{
		ProxyOptions:   ProxyOptions{Balancer: bal, Rules: o.rules, Instances: in, Now: o.now, Limits: o.limits, Access: o.access},
		Listen:         listen,
		Readers:        o.readers,
		MessageTimeout: o.messageTimeout,
		IdleTimeout:    o.idleTimeout,
		MaxConns:       o.maxConns,
		TLS:            store,
		WS:             ws,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.server = srv
	c.udp, c.tcp = srv.transport("udp").selves()[0].addr, srv.transport("tcp").selves()[0].addr
	if store != nil {
		c.tls = srv.transport("tls").selves()[0].addr
	}
	if o.linger > 0 {
		for _, tr := range srv.transports {
			switch st := tr.(type) {
			case *streamTransport:
				st.linger = o.linger
			case *wsTransport:
				st.linger = o.linger
			}
		}
	}
	if o.ws != nil {
		c.ws = srv.transport("ws").selves()[0].addr
		if store != nil {
			c.wss = srv.transport("wss").selves()[0].addr
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(c.stop)
	return c
}

// clb is the address of clb's listener for transport.
func (c *cluster) clb(transport string) netip.AddrPort {
	switch transport {
	case "tcp":
		return c.tcp
	case "tls":
		return c.tls
	case "ws":
		return c.ws
	case "wss":
		return c.wss
	}
	return c.udp
}

// newStore is TLS material for 127.0.0.1 signed by the cluster's CA, which
// is also the instance CA.
func (c *cluster) newStore(name string) *certs.Store {
	c.t.Helper()
	dir := c.t.TempDir()
	cert, key := c.ca.Issue(c.t, certstest.Leaf{Name: name}).Write(c.t, dir, name)
	m, err := certs.Load(certs.Files{Cert: cert, Key: key, InstanceCA: c.ca.WriteCA(c.t, dir, "ca")}, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return certs.NewStore(m)
}

// newPeer is a peer on the cluster's inbox; a "tls" one has a
// certificate of the cluster's CA and trusts it.
func (c *cluster) newPeer(name, transport, ip string) *peer {
	c.t.Helper()
	if transport != "tls" {
		return newPeerAt(c.t, name, transport, ip, c.inbox)
	}
	return newPeerTLS(c.t, name, transport, ip, c.inbox, c.ca.Issue(c.t, certstest.Leaf{Name: name, Hosts: []string{ip}}).ServerConfig(), c.ca.ClientConfig())
}

// recvAny waits for a request at any instance and says which got it.
func (c *cluster) recvAny(method string) (string, *gosip.Request) {
	c.t.Helper()
	select {
	case e := <-c.inbox:
		req, ok := e.msg.(*gosip.Request)
		if !ok || string(req.Method) != method {
			c.t.Fatalf("%s: want a %s request, got:\n%s", e.at, method, e.msg)
		}
		return e.at, req
	case <-time.After(wait):
		c.t.Fatalf("no instance got a %s within %v", method, wait)
		return "", nil
	}
}

// quiet fails if an instance has anything queued.
func (c *cluster) quiet() {
	c.t.Helper()
	select {
	case e := <-c.inbox:
		c.t.Fatalf("%s got an unexpected message:\n%s", e.at, e.msg)
	default:
	}
}

func header(m gosip.Message, name string) string {
	if hs := m.GetHeaders(name); len(hs) > 0 {
		return hs[0].Value()
	}
	return ""
}

// newInvite builds an INVITE from phone p to clb.
func newInvite(p *peer, clb netip.AddrPort, user, callID string) *gosip.Request {
	req := gosip.NewRequest(gosip.INVITE, gosip.Uri{Scheme: "sip", User: "service", Host: clb.Addr().String(), Port: int(clb.Port())})
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(p.transport),
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: gosip.GenerateBranch()}}})
	req.AppendHeader(&gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: user, Host: "example.com"},
		Params: gosip.HeaderParams{{K: "tag", V: gosip.GenerateTagN(10)}}})
	req.AppendHeader(&gosip.ToHeader{Address: gosip.Uri{Scheme: "sip", User: "service", Host: "example.com"}})
	cid := gosip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.INVITE})
	contact := p.uri(user)
	req.AppendHeader(&gosip.ContactHeader{Address: contact})
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	return req
}

// respond builds a response to req as a UAS at p: Vias, Record-Routes and
// dialog fields copied (sipgo copies them), its own To tag and Contact.
func respond(p *peer, req *gosip.Request, code int, reason, toTag string) *gosip.Response {
	res := gosip.NewResponseFromRequest(req, code, reason, nil)
	if toTag != "" && code > 100 {
		if to := res.To(); to != nil {
			if _, ok := to.Params.Get("tag"); !ok {
				to.Params = append(to.Params, gosip.HeaderKV{K: "tag", V: toTag})
			}
		}
	}
	if code >= 200 && code < 300 {
		res.AppendHeader(&gosip.ContactHeader{Address: p.uri("uas")})
	}
	return res
}

// dialog is the caller's view of a dialog set up through clb.
type dialog struct {
	callID          string
	fromTag, toTag  string
	from, to        gosip.Uri
	routes          []gosip.Uri // the route set, caller's order
	callerContact   gosip.Uri
	calleeContact   gosip.Uri
	cseq            uint32
	calleeCSeq      uint32
	instance        string // the instance that answered
	recordRouteLine string
}

// inDialog builds a request in dialog d: from the caller (fromCaller) or from
// the callee, sent by p.
func inDialog(p *peer, d *dialog, method gosip.RequestMethod, fromCaller bool) *gosip.Request {
	target, fromURI, toURI, fromTag, toTag := d.calleeContact, d.from, d.to, d.fromTag, d.toTag
	routes := d.routes
	seq := &d.cseq
	if !fromCaller {
		target, fromURI, toURI, fromTag, toTag = d.callerContact, d.to, d.from, d.toTag, d.fromTag
		seq = &d.calleeCSeq
		// The callee's route set is the Record-Route in order: reversed.
		routes = make([]gosip.Uri, len(d.routes))
		for i, r := range d.routes {
			routes[len(d.routes)-1-i] = r
		}
	}
	if method != gosip.ACK {
		*seq++
	}
	req := gosip.NewRequest(method, target)
	req.AppendHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(p.transport),
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: gosip.HeaderParams{{K: "branch", V: gosip.GenerateBranch()}}})
	for _, r := range routes {
		req.AppendHeader(&gosip.RouteHeader{Address: r})
	}
	req.AppendHeader(&gosip.FromHeader{Address: fromURI, Params: gosip.HeaderParams{{K: "tag", V: fromTag}}})
	req.AppendHeader(&gosip.ToHeader{Address: toURI, Params: gosip.HeaderParams{{K: "tag", V: toTag}}})
	cid := gosip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&gosip.CSeqHeader{SeqNo: *seq, MethodName: method})
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	return req
}

// call sets up a dialog from phone through clb: INVITE, 180, 200, ACK. It
// returns the dialog and the instance's INVITE as received.
func (c *cluster) call(phone *peer, user string) (*dialog, *gosip.Request) {
	c.t.Helper()
	clb := c.clb(phone.transport)
	inv := newInvite(phone, clb, user, fmt.Sprintf("call-%s-%s", user, gosip.GenerateTagN(8)))
	phone.send(inv, clb)
	name, got := c.recvAny("INVITE")
	uas := c.instances[name]
	toTag := gosip.GenerateTagN(8)
	uas.send(respond(uas, got, 180, "Ringing", toTag), c.clb(uas.transport))
	phone.recvResponse(180)
	uas.send(respond(uas, got, 200, "OK", toTag), c.clb(uas.transport))
	ok := phone.recvResponse(200)

	d := &dialog{callID: inv.CallID().Value(), fromTag: mustTag(inv.From().Params), toTag: toTag,
		from: inv.From().Address, to: inv.To().Address, cseq: 1, calleeCSeq: 100, instance: name,
		callerContact: inv.Contact().Address, calleeContact: ok.Contact().Address}
	for _, h := range ok.GetHeaders("record-route") {
		// The caller's route set is the Record-Route reversed (RFC 3261
		// 12.1.2).
		rr := h.(*gosip.RecordRouteHeader)
		d.routes = append([]gosip.Uri{rr.Address}, d.routes...)
		d.recordRouteLine = rr.Value()
	}
	ack := inDialog(phone, d, gosip.ACK, true)
	phone.send(ack, clb)
	if got := c.instances[name].recvRequest("ACK"); got.CallID().Value() != d.callID {
		c.t.Fatalf("ACK of another call at %s", name)
	}
	return d, got
}

func mustTag(ps gosip.HeaderParams) string {
	t, _ := ps.Get("tag")
	return t
}
