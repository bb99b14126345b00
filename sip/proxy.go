package sip

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"clb/accesslog"
	"clb/balancer"
	"clb/config"
	"clb/metrics"
	"clb/policy"
)

// endpoint is a SIP transport address: one of clb's listeners, or where a
// message goes.
type endpoint struct {
	transport string // the Via token, lower case: "udp", "tcp", …
	addr      netip.AddrPort
}

// inbound is one message as it arrived.
type inbound struct {
	data  []byte
	local endpoint       // the listener it arrived on (for a connection, its transport's listener)
	src   netip.AddrPort // the peer
	conn  conn           // the connection, on a stream transport; else nil
}

// destination is where a message goes: an address over a transport, and
// first a given connection while it is open.
type destination struct {
	endpoint
	conn conn
}

// sender puts bytes on the wire; the Server implements it. The proxy names
// transports only by their Via token and knows connections only as conn.
type sender interface {
	// send puts data on dst.conn, if set and still open, else on the wire
	// to dst.addr over dst.transport.
	send(dst destination, data []byte) error
	// listener is clb's own endpoint for transport, in the address family of
	// to: what goes in its Via and Record-Route towards to.
	listener(transport string, to netip.Addr) (endpoint, bool)
	// isSelf reports whether addr is one of clb's listeners.
	isSelf(addr netip.AddrPort) bool
	// connWith is the open connection with the peer at remote on the
	// stream transport named transport, or nil.
	connWith(transport string, remote netip.AddrPort) conn
	// flow is the WebSocket connection a flow token of transport names
	// (flowOpen), or why there is none.
	flow(transport, token string) (destination, flowState)
	// hasPort reports whether one of clb's listeners has this port: with
	// listen.advertise, a Via or Route names clb by the advertised host and
	// a listener's port.
	hasPort(port uint16) bool
}

// settings are what a reload changes, swapped in as one.
type settings struct {
	rules  *policy.Rules
	byAddr map[endpoint]*config.Instance // instances with a SIP address
	// hosts are those instances' IP addresses: what flood control must
	// not refuse before it knows whether an instance sent a request.
	hosts map[netip.Addr]bool
}

// scratch is one reader goroutine's reusable memory: handling a message
// allocates nothing of clb's own beyond what the parser does.
type scratch struct {
	wire wire
	view view
	out  []byte
	// batch, on a UDP reader, queues the datagrams it sends; streams, on a
	// stream connection's goroutine, what it sends to open connections (nil:
	// each message is sent at once).
	batch   *sendBatch
	streams *streamBatch
	// admitted: flood control took this request's token already.
	admitted bool
	line     accesslog.Line
	// route holds the decoded values of clb's Route (parseDialogRoute).
	route []byte
	// key holds a request's key when it is made of two fields (requestKey).
	key []byte
}

// Proxy is the stateless forwarding core (RFC 3261 section 16.11): it keeps
// no state per transaction or dialog. It is safe for concurrent use: every
// reader goroutine brings its own scratch.
type Proxy struct {
	bal        *balancer.Balancer
	log        *zap.Logger
	now        func() time.Time
	headers    gosip.HeadersParser // sipgo's parsers of single fields
	net        sender
	settings   atomic.Pointer[settings]
	flood      atomic.Pointer[flood]
	retryAfter int // seconds, in 503 responses
	metrics    *metrics.Metrics
	report     func(instance string, ok bool)
	access     *accesslog.Log
	// advertise is the host clb names itself by in Via and Record-Route
	// ("" for the listener's address); node tells this process's Via
	// apart from another node's with the same name, for loop detection.
	advertise, node string
}

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	Balancer *balancer.Balancer
	// Rules are keys.sip of the configuration.
	Rules []config.Rule
	// Instances are the configured instances; those with a SIP address are
	// recognised as senders of requests leaving the cluster.
	Instances []config.Instance
	Logger    *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RetryAfter goes in 503 responses, in whole seconds rounded up; 0
	// means 5 s.
	RetryAfter time.Duration
	// Metrics, if set, counts requests, dialogs, repairs and errors.
	Metrics *metrics.Metrics
	// Report, if set, hears of an instance that could not be sent to (a
	// passive health failure).
	Report func(instance string, ok bool)
	// Limits is the flood control of SPEC section 12 (zero: none).
	Limits config.Limits
	// Advertise is listen.advertise: the host clb names in its Via and
	// Record-Route, shared by every clb node, so that any of them takes an
	// in-dialog request another one record-routed.
	Advertise string
	// Access, if set, writes a line per request forwarded or answered
	// while it is on.
	Access *accesslog.Log
}

func newProxy(o ProxyOptions, net sender) *Proxy {
	p := &Proxy{
		bal:        o.Balancer,
		log:        o.Logger,
		now:        o.Now,
		headers:    gosip.DefaultHeadersParser(),
		net:        net,
		retryAfter: policy.RetryAfterSeconds(o.RetryAfter),
		metrics:    o.Metrics,
		report:     o.Report,
		access:     o.Access,
		advertise:  o.Advertise,
		node:       newNodeID(),
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.reload(o.Rules, o.Instances)
	p.flood.Store(newFlood(o.Limits))
	return p
}

// reload replaces the key rules and the configured instances at once.
func (p *Proxy) reload(rules []config.Rule, in []config.Instance) {
	byAddr := bySIPAddr(in)
	p.settings.Store(&settings{rules: policy.Compile(rules), byAddr: byAddr, hosts: hostsOf(byAddr)})
}

// setInstances replaces the instances and keeps the rules; setRules the
// other way round. Each swaps in a copy of the settings, retried if another
// swap came first, so that neither loses the other's change.
func (p *Proxy) setInstances(in []config.Instance) {
	byAddr := bySIPAddr(in)
	for {
		old := p.settings.Load()
		if p.settings.CompareAndSwap(old, &settings{rules: old.rules, byAddr: byAddr, hosts: hostsOf(byAddr)}) {
			return
		}
	}
}

func (p *Proxy) setRules(rules []config.Rule) {
	compiled := policy.Compile(rules)
	for {
		old := p.settings.Load()
		if p.settings.CompareAndSwap(old, &settings{rules: compiled, byAddr: old.byAddr, hosts: old.hosts}) {
			return
		}
	}
}

func hostsOf(byAddr map[endpoint]*config.Instance) map[netip.Addr]bool {
	hosts := make(map[netip.Addr]bool, len(byAddr))
	for e := range byAddr {
		hosts[e.addr.Addr()] = true
	}
	return hosts
}

func bySIPAddr(in []config.Instance) map[endpoint]*config.Instance {
	byAddr := map[endpoint]*config.Instance{}
	for i := range in {
		inst := &in[i]
		if ip, err := netip.ParseAddr(inst.SIP.Host); err == nil {
			byAddr[endpoint{inst.SIP.Transport, netip.AddrPortFrom(ip.Unmap(), uint16(inst.SIP.Port))}] = inst
		}
	}
	return byAddr
}

// handle processes one message.
func (p *Proxy) handle(in *inbound, sc *scratch) {
	sc.wire = scan(in.data, sc.wire.lines)
	v := &sc.view
	sc.admitted = false
	if p.refuseEarly(in, sc) {
		return
	}
	r, ok := p.parse(&sc.wire, v)
	switch {
	case !v.request && ok:
		p.response(in, sc, v)
	case v.request && !ok:
		if ce := p.log.Check(zap.DebugLevel, "request refused"); ce != nil {
			ce.Write(zap.Stringer("from", in.src), zap.Int("code", r.code), zap.String("reason", r.reason))
		}
		p.reply(in, sc, v, r)
	case v.request:
		p.request(in, sc, v)
	}
}

// request forwards a request or answers it.
func (p *Proxy) request(in *inbound, sc *scratch, v *view) {
	if p.looped(v) {
		p.reply(in, sc, v, refusal{code: 482, reason: "Loop Detected"})
		return
	}
	if v.maxFwd == 0 {
		p.reply(in, sc, v, refusal{code: 483, reason: "Too Many Hops"})
		return
	}

	var dr dialogRoute
	ours := false
	var path *gosip.Uri // clb's Path entry of a WebSocket client's registration
	if rt := v.route; rt != nil && p.isSelfURI(&rt.Address) {
		dr, ours = parseDialogRoute(func(k string) (string, bool) { return param(rt.Address.UriParams, k) }, &sc.route)
		switch {
		case !ours && isPathRoute(&rt.Address):
			path = &rt.Address
		case !ours:
			p.reply(in, sc, v, refusal{code: 400, reason: "Bad Route"})
			return
		}
	}
	e := edits{}
	var flow *gosip.Uri // the client-facing entry of a double Record-Route
	if ours {
		e.dropRoutes, flow = p.ourRoutes(v)
	}
	sender := p.sentByInstance(in, v)
	if sender == nil && !p.admit(in, sc, v, ours) {
		return
	}
	switch {
	case ours && (v.fromTag() == dr.ftag) != dr.outbound:
		// In dialog, from the side outside the cluster: into the cluster,
		// by the dialog's key, with sticky repair against beroute.
		if flow != nil && !p.ownFlow(in, sc, v, flow) {
			return
		}
		p.toInstance(in, sc, v, dr.key, dr.instance, e, false)
	case ours && flow != nil:
		// In dialog, from inside, towards a WebSocket client: over its
		// connection, found by the flow token.
		e.key = dr.key
		p.toFlow(in, sc, v, e, flow, nil)
	case path != nil && sender == nil:
		// Only the cluster reaches a client by its registration.
		p.reply(in, sc, v, refusal{code: 403, reason: "Forbidden", kind: "flow"})
	case path != nil:
		// An instance reaches a WebSocket client by the Path of its
		// registration (a call to a browser phone): over the client's
		// connection, Record-Routed as a dialog the instance began.
		e.dropRoutes = 1
		var rr *dialogRoute
		if v.startsDialog() {
			rr = &dialogRoute{key: p.requestKey(v, sc), instance: sender.Name, ftag: v.fromTag(), outbound: true}
			e.key = rr.key
		}
		p.toFlow(in, sc, v, e, path, rr)
	case ours:
		// In dialog, from inside: out, like any loose router.
		e.key = dr.key // for the access log
		p.outward(in, sc, v, e, nil)
	case sender != nil:
		// An instance starts a dialog (or sends outside one) to the world.
		var rr *dialogRoute
		if v.startsDialog() {
			rr = &dialogRoute{key: p.requestKey(v, sc), instance: sender.Name, ftag: v.fromTag(), outbound: true}
		}
		p.outward(in, sc, v, e, rr)
	default:
		p.toInstance(in, sc, v, p.requestKey(v, sc), "", e, v.startsDialog())
	}
}

// startsDialog reports whether clb should Record-Route the request: one
// outside a dialog that can create one or be followed by others.
func (v *view) startsDialog() bool {
	if v.toTag() != "" {
		return false
	}
	switch strings.ToUpper(v.method) {
	case "ACK", "CANCEL", "REGISTER":
		return false
	}
	return true
}

func (v *view) fromTag() string {
	t, _ := param(v.from.Params, "tag")
	return t
}

func (v *view) toTag() string {
	t, _ := param(v.to.Params, "tag")
	return t
}

// sentByInstance is the configured instance that sent the request: its top
// Via's sent-by is an instance's SIP address and the packet came from its
// host.
func (p *Proxy) sentByInstance(in *inbound, v *view) *config.Instance {
	via := v.via
	ip, err := netip.ParseAddr(strings.Trim(via.Host, "[]"))
	if err != nil || ip.Unmap() != in.src.Addr().Unmap() {
		return nil
	}
	port := via.Port
	if port == 0 {
		port = 5060
	}
	return p.settings.Load().byAddr[endpoint{transportName(via.Transport), netip.AddrPortFrom(ip.Unmap(), uint16(port))}]
}

// looped reports whether the request carries a Via clb put there (RFC 3261
// 16.3 item 4): clb's address with a branch of clb's. Only Via fields with
// such a branch are parsed.
func (p *Proxy) looped(v *view) bool {
	for _, l := range v.w.lines {
		if l.field != fieldVia || !bytes.Contains(v.w.value(l), []byte(branchPrefix)) {
			continue
		}
		vias, err := p.headers.ParseHeader(nil, unfold(v.w.data[l.start:l.end-2]))
		if err != nil {
			continue
		}
		for _, h := range vias {
			if via, ok := h.(*gosip.ViaHeader); ok && p.isThisNode(via) {
				return true
			}
		}
	}
	return false
}

func (p *Proxy) isOurVia(v *gosip.ViaHeader) bool {
	b, _ := param(v.Params, "branch")
	if !strings.HasPrefix(b, branchPrefix) {
		return false
	}
	return p.isSelfHost(v.Host, v.Port)
}

// isThisNode reports whether v is this process's own Via: with an
// advertised name, the one it shares with other nodes, its node parameter
// says which node put it there. A request that passed another node is no
// loop; a response to one is still ours to send on (any node can: clb keeps
// no transaction state).
func (p *Proxy) isThisNode(v *gosip.ViaHeader) bool {
	if !p.isOurVia(v) {
		return false
	}
	if p.advertise == "" || !strings.EqualFold(v.Host, p.advertise) {
		return true
	}
	n, _ := param(v.Params, paramNode)
	return n == p.node
}

// isSelfURI reports whether a Route URI names one of clb's listeners.
func (p *Proxy) isSelfURI(u *gosip.Uri) bool { return p.isSelfHost(u.Host, u.Port) }

// isSelfHost reports whether host and port name clb: one of its listeners'
// addresses, or the advertised name with one of their ports.
func (p *Proxy) isSelfHost(host string, port int) bool {
	if port == 0 {
		port = 5060
	}
	if p.advertise != "" && strings.EqualFold(host, p.advertise) {
		return p.net.hasPort(uint16(port))
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && p.net.isSelf(netip.AddrPortFrom(ip.Unmap(), uint16(port)))
}

// newNodeID is 64 random bits in hex: this process among the clb nodes.
func newNodeID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// toInstance sends a request into the cluster: to the owner of key among the
// instances with a SIP address, telling it the replica partner.
func (p *Proxy) toInstance(in *inbound, sc *scratch, v *view, key, last string, e edits, recordRoute bool) {
	now := p.now()
	d := p.bal.Table().RouteFor(balancer.SIP, key, last, now)
	dst, ok := endpoint{}, false
	if d.Owner != nil {
		dst, ok = instanceEndpoint(d.Owner)
	}
	if !ok {
		p.reply(in, sc, v, refusal{code: 503, reason: "Service Unavailable", retryAfter: p.retryAfter, key: key})
		return
	}
	p.metrics.Routed(d.Owner.ClusterName(), key, now)
	var rr *dialogRoute
	if recordRoute {
		rr = &dialogRoute{key: key, instance: d.Owner.Name, ftag: v.fromTag()}
		p.metrics.Session("sip", d.Owner.Name)
	}
	if d.Repaired {
		p.metrics.Repair("sip")
	}
	e.dropCLB, e.decision, e.key = true, &d, key
	p.forward(in, sc, v, destination{endpoint: dst}, e, key, rr)
}

// instanceEndpoint is where an instance takes SIP.
func instanceEndpoint(inst *config.Instance) (endpoint, bool) {
	ip, err := netip.ParseAddr(inst.SIP.Host)
	if err != nil {
		return endpoint{}, false
	}
	return endpoint{inst.SIP.Transport, netip.AddrPortFrom(ip.Unmap(), uint16(inst.SIP.Port))}, true
}

// outward sends a request out of the cluster: to the next Route, or else to
// its Request-URI.
func (p *Proxy) outward(in *inbound, sc *scratch, v *view, e edits, rr *dialogRoute) {
	target := &v.uri
	routes := p.fieldValues(v, fieldRoute, e.dropRoutes+1)
	routes = routes[min(e.dropRoutes, len(routes)):]
	if len(routes) > 0 {
		if rt, ok := routes[0].(*gosip.RouteHeader); ok {
			target = &rt.Address
		}
	}
	dst, ok := uriEndpoint(target)
	if !ok {
		p.reply(in, sc, v, refusal{code: 502, reason: "Bad Gateway"})
		return
	}
	key := e.key // an in-dialog request's, or that of a dialog it starts
	if key == "" && rr != nil {
		key = rr.key
	}
	p.forward(in, sc, v, destination{endpoint: dst}, e, key, rr)
}

// uriEndpoint is where a SIP URI with an IP address points: a sips: URI
// over TLS (RFC 3261 26.2.2), a sip: one over its transport parameter, else
// UDP; without a port, 5061 over TLS and 5060 otherwise.
func uriEndpoint(u *gosip.Uri) (endpoint, bool) {
	transport := "udp"
	switch {
	case strings.EqualFold(u.Scheme, "sips"):
		transport = "tls"
	case !strings.EqualFold(u.Scheme, "sip"):
		return endpoint{}, false
	}
	ip, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil || !usable(ip) {
		return endpoint{}, false
	}
	if t, ok := param(u.UriParams, "transport"); ok && transport == "udp" {
		transport = strings.ToLower(t)
	}
	port := u.Port
	if port == 0 {
		port = defaultPort(transport)
	}
	return endpoint{transport, netip.AddrPortFrom(ip.Unmap(), uint16(port))}, true
}

// defaultPort is the port of a SIP address written without one (RFC 3261
// 19.1.2).
func defaultPort(transport string) int {
	if transport == "tls" {
		return 5061
	}
	return 5060
}

// usable rules out addresses no message should go to.
func usable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// response relays a response to the next Via, if the top one is clb's.
func (p *Proxy) response(in *inbound, sc *scratch, v *view) {
	if !p.isOurVia(v.via) {
		return // not a response to a request clb forwarded
	}
	dst, ok := viaDestination(v.via2)
	if !ok {
		return
	}
	if src, ok := param(v.via.Params, paramSource); ok {
		// The request came over a connection: answer on it (RFC 3261
		// 18.2.2) while it is open.
		if s, ok := policy.UnescapeKey(src); ok {
			transport := dst.transport // a node of before the transport was kept
			if t, a, found := strings.Cut(s, "/"); found {
				transport, s = t, a
			}
			if a, err := netip.ParseAddrPort(s); err == nil {
				dst.conn = p.net.connWith(transport, a)
			}
		}
	}
	sc.out = appendResponse(sc.out[:0], v)
	p.deliver(sc, dst)
}

// viaDestination is where a response goes for Via v: received and rport
// when present (RFC 3261 18.2.2, RFC 3581), else the sent-by.
func viaDestination(v *gosip.ViaHeader) (destination, bool) {
	host := v.Host
	if r, ok := param(v.Params, "received"); ok && r != "" {
		host = r
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil || !usable(ip) {
		return destination{}, false
	}
	port := v.Port
	if r, ok := param(v.Params, "rport"); ok && r != "" {
		port = atoiPort(r, port)
	}
	transport := transportName(v.Transport)
	if port == 0 {
		port = defaultPort(transport)
	}
	return destination{endpoint: endpoint{transport, netip.AddrPortFrom(ip.Unmap(), uint16(port))}}, true
}

// transportName is a Via's transport as clb spells it, lower case; the
// usual ones without allocating, as this runs for every message.
func transportName(t string) string {
	for _, name := range [...]string{"udp", "tcp", "tls", "ws", "wss"} {
		if strings.EqualFold(t, name) {
			return name
		}
	}
	return strings.ToLower(t)
}

func atoiPort(s string, def int) int {
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' || n > 65535 {
			return def
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return def
	}
	return n
}

// deliver sends sc.out and logs a failure: a stateless proxy has no one
// to tell.
func (p *Proxy) deliver(sc *scratch, dst destination) {
	if err := p.transmit(sc, dst, "", false); err != nil {
		p.sendFailed(dst, "", false, err)
	}
}

// transmit sends sc.out to dst: a datagram into the reader's batch, sent
// once the reader has handled what it read (sc.out is then another
// buffer), a message on an open stream connection into its goroutine's
// batch (a copy), likewise, anything else at once. instance, and whether a failure counts
// as a send error (counted), are for a failure found when the batch goes.
func (p *Proxy) transmit(sc *scratch, dst destination, instance string, counted bool) error {
	if b := sc.batch; b != nil && dst.conn == nil && dst.transport == "udp" {
		if next, ok := b.queue(dst.addr, sc.out, instance, counted); ok {
			sc.out = next
			return nil
		}
	}
	if b := sc.streams; b != nil && b.queue(dst, sc.out, instance, counted) {
		return nil
	}
	return p.net.send(dst, sc.out)
}

// sendFailed accounts for a message that could not be sent: a request
// forwarded (counted) is a send error, and a passive health failure of
// the instance it went to.
func (p *Proxy) sendFailed(dst destination, instance string, counted bool, err error) {
	if counted {
		p.metrics.Error("sip", "send")
		if instance != "" && p.report != nil {
			p.report(instance, false)
		}
	}
	if ce := p.log.Check(zap.DebugLevel, "send failed"); ce != nil {
		ce.Write(zap.Stringer("to", dst.addr), zap.String("transport", dst.transport), zap.Error(err))
	}
}
