package sip

import (
	"bytes"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// flowState is what a flow token leads to.
type flowState int

const (
	flowOpen   flowState = iota // the connection it names, open
	flowGone                    // a token clb made, of a connection that is closed
	flowForged                  // not a token clb made (or altered, or of another transport)
)

// isWebSocket reports whether a transport token is a WebSocket one.
func isWebSocket(transport string) bool { return transport == "ws" || transport == "wss" }

// appendRecordRoutes appends clb's Record-Route for a dialog: one entry,
// through the listener the request came on; for a WebSocket client two
// (RFC 7118 and RFC 5658 double record-routing, SPEC section 6a): the
// entry facing the instance through self (clb's listener on the
// instance's transport), then the one facing the client through the
// client's listener, with the flow token of its connection. A dialog an
// instance begins towards a WebSocket client (to connection to) gets the
// same two entries the other way round: the client-facing one, through
// self, first.
func (p *Proxy) appendRecordRoutes(dst []byte, self endpoint, in *inbound, to conn, rr dialogRoute) []byte {
	if f, ok := to.(flowConn); ok {
		client := rr
		client.flow = f.flowToken()
		dst = appendRecordRoute(dst, p.named(self), client)
		return appendRecordRoute(dst, p.named(in.local), rr)
	}
	f, ok := in.conn.(flowConn)
	if !ok {
		return appendRecordRoute(dst, p.named(in.local), rr)
	}
	dst = appendRecordRoute(dst, p.named(self), rr)
	rr.flow = f.flowToken()
	return appendRecordRoute(dst, p.named(in.local), rr)
}

// appendPath appends the Path entry (RFC 3327, RFC 5626 5.2 edge proxy)
// of a REGISTER from a WebSocket client that supports Path: clb's
// listener self, which faces the instance, with the flow token of the
// client's connection, so that a request the registrar later sends to the
// client by that Path (an INVITE to a browser phone) reaches the client's
// WebSocket, still with no state in clb. A client that does not support
// Path gets none (RFC 3327 5.2).
func (p *Proxy) appendPath(dst []byte, self endpoint, in *inbound, v *view) []byte {
	f, ok := in.conn.(flowConn)
	if !ok || !strings.EqualFold(v.method, "REGISTER") || !hasOptionTag(v.w.header("supported"), "path") {
		return dst
	}
	dst = append(dst, "Path: <sip:"...)
	dst = appendSelf(dst, p.named(self))
	dst = append(dst, ";transport="...)
	dst = append(dst, self.transport...)
	dst = append(dst, ";lr;ob;"+paramFlow+"="...)
	dst = append(dst, f.flowToken()...)
	return append(dst, ">\r\n"...)
}

// hasOptionTag reports whether a Supported or Require value lists tag.
func hasOptionTag(value []byte, tag string) bool {
	for item := range bytes.SplitSeq(value, []byte(",")) {
		if strings.EqualFold(string(bytes.Trim(item, " \t")), tag) {
			return true
		}
	}
	return false
}

// isPathRoute reports whether u, a Route to clb that is not a dialog's,
// is the Path entry clb put in a WebSocket client's REGISTER.
func isPathRoute(u *gosip.Uri) bool {
	_, ok := param(u.UriParams, paramFlow)
	return ok
}

// ourRoutes is how many of the request's top Route entries are clb's to
// remove (its top one, known to be clb's; both of a double Record-Route),
// and the entry among them with a flow token, if any. A second entry is
// parsed only when there is one: single-Route requests pay nothing.
func (p *Proxy) ourRoutes(v *view) (int, *gosip.Uri) {
	top := &v.route.Address
	_, topFlow := param(top.UriParams, paramFlow)
	var flow *gosip.Uri
	if topFlow {
		flow = top
	}
	if !v.w.manyRoutes() {
		return 1, flow
	}
	routes := p.fieldValues(v, fieldRoute, 2)
	if len(routes) < 2 {
		return 1, flow
	}
	next, ok := routes[1].(*gosip.RouteHeader)
	if !ok || !p.isSelfURI(&next.Address) {
		return 1, flow
	}
	// The two entries of one double Record-Route: the same dialog's, one
	// of them (only) facing the client. Two clb entries of two passes
	// through clb are not a pair.
	_, nextFlow := param(next.Address.UriParams, paramFlow)
	k1, _ := param(top.UriParams, paramKey)
	k2, _ := param(next.Address.UriParams, paramKey)
	if topFlow == nextFlow || k1 != k2 {
		return 1, flow
	}
	if nextFlow {
		flow = &next.Address
	}
	return 2, flow
}

// manyRoutes reports whether the message has more than one Route value.
func (w *wire) manyRoutes() bool {
	i := w.first(fieldRoute)
	return i >= 0 && (w.count(fieldRoute) > 1 || w.firstValueEnd(w.lines[i]) < w.lines[i].valueEnd)
}

// flowOf is the connection a flow entry u names.
// A Path entry faces the instance, so its transport is the instance's:
// the token is then one of either WebSocket transport.
func (p *Proxy) flowOf(u *gosip.Uri) (destination, flowState) {
	tok, _ := param(u.UriParams, paramFlow)
	tr, _ := param(u.UriParams, "transport")
	tr = strings.ToLower(tr)
	if isWebSocket(tr) {
		return p.net.flow(tr, tok)
	}
	dst, st := p.net.flow("ws", tok)
	if st == flowForged {
		dst, st = p.net.flow("wss", tok)
	}
	return dst, st
}

// ownFlow checks the flow token of a request a client sends into the
// cluster: clb must have made it and, when the request comes over a
// WebSocket, for that very connection, so that no client presents
// another's flow. It answers 403 and returns false otherwise.
func (p *Proxy) ownFlow(in *inbound, sc *scratch, v *view, u *gosip.Uri) bool {
	dst, st := p.flowOf(u)
	if st == flowForged || isWebSocket(in.local.transport) && (st != flowOpen || dst.conn != in.conn) {
		p.reply(in, sc, v, refusal{code: 403, reason: "Forbidden", kind: "flow"})
		return false
	}
	return true
}

// toFlow sends a request from inside the cluster over the WebSocket
// connection its flow entry u names: 403 for a token clb did not make or
// a request that itself came over a WebSocket (a client reaches no other
// client's flow), 430 Flow Failed (RFC 5626 5.3) when the connection is
// gone. clb keeps nothing per dialog: the token is all it needs.
func (p *Proxy) toFlow(in *inbound, sc *scratch, v *view, e edits, u *gosip.Uri, rr *dialogRoute) {
	dst, st := p.flowOf(u)
	switch {
	case st == flowForged || isWebSocket(in.local.transport):
		p.reply(in, sc, v, refusal{code: 403, reason: "Forbidden", kind: "flow", key: e.key})
		return
	case st == flowGone:
		p.reply(in, sc, v, refusal{code: 430, reason: "Flow Failed", kind: "flow", key: e.key})
		return
	}
	p.forward(in, sc, v, dst, e, e.key, rr)
}

// appendRoutesAfter appends Route field l without its first drop values,
// or nothing when they are all of it; it returns how many are left to drop
// from the next Route field.
func appendRoutesAfter(dst []byte, w *wire, l line, drop int) ([]byte, int) {
	for drop > 0 {
		comma := w.firstValueEnd(l)
		drop--
		if comma == l.valueEnd {
			return dst, drop
		}
		l.valueStart = w.restStart(l, comma)
	}
	dst = append(dst, "Route: "...)
	dst = append(dst, w.data[l.valueStart:l.valueEnd]...)
	return append(dst, crlf...), 0
}
