package sip

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
	"clb/balancer"
	"clb/policy"
)

// branchPrefix starts every branch clb puts in its Via: the RFC 3261 magic
// cookie, then "clb", so that clb knows its own Vias.
const branchPrefix = "z9hG4bKclb"

// paramSource in clb's Via keeps the transport and peer a request came
// from over a connection ("ws/192.0.2.1:5062", escaped), so that the
// response finds that connection again whatever the sender's Via says
// (a WebSocket client may name WS on wss).
const paramSource = "clb-src"

// edits say how a forwarded request differs from the one received.
type edits struct {
	dropRoutes int                // remove this many top Route values: clb's own
	dropCLB    bool               // remove X-CLB-* fields the sender put in
	decision   *balancer.Decision // add X-CLB-* fields telling the instance
	key        string             // the request's key, when known
}

// forward sends req on to dst with clb's Via, Max-Forwards decremented and
// the edits applied; rr, if set, adds clb's Record-Route. key is the
// request's key for the access log ("" when it has none): a parameter of
// its own, not read from e, so that e (and the Decision it points to, on
// the caller's stack) does not escape with it.
func (p *Proxy) forward(in *inbound, sc *scratch, v *view, dst destination, e edits, key string, rr *dialogRoute) {
	self, ok := p.net.listener(dst.transport, dst.addr.Addr())
	if !ok {
		p.reply(in, sc, v, refusal{code: 502, reason: "Bad Gateway"})
		return
	}
	out := append(sc.out[:0], v.w.data[:v.w.startLine+2]...)
	out = p.appendVia(out, self, v, in)
	if rr != nil {
		out = p.appendRecordRoutes(out, self, in, dst.conn, *rr)
	}
	out = p.appendPath(out, self, in, v)
	if e.decision != nil {
		out = policy.AppendFields(out, e.key, e.decision)
	}
	out = appendRequestFields(out, v, in, e)
	out = append(out, crlf...)
	out = append(out, v.body...)
	sc.out = out
	instance, outcome := "", "outward"
	if e.decision != nil {
		instance, outcome = e.decision.Owner.Name, "forwarded"
	}
	if err := p.transmit(sc, dst, instance, true); err != nil {
		outcome = "failed"
		p.sendFailed(dst, instance, true, err)
	}
	p.metrics.Request("sip", v.method, instance, outcome)
	if ce := p.access.Check(accesslog.MsgSIP, key); ce != nil {
		p.logRequest(ce, in, sc, v, key, e.decision, outcome, 0)
	}
}

// logRequest writes the access log line of a request forwarded (d is its
// decision when it went to an instance) or answered by clb with status.
func (p *Proxy) logRequest(ce *zapcore.CheckedEntry, in *inbound, sc *scratch, v *view, key string, d *balancer.Decision, outcome string, status int) {
	ln := &sc.line
	ln.Reset(true)
	ln.Method, ln.CallID, ln.Key, ln.Outcome, ln.Status = v.method, v.callID, key, outcome, status
	if d != nil && d.Owner != nil {
		ln.Instance = d.Owner.Name
		if d.Replica != nil {
			ln.Replica = d.Replica.Name
		}
		if d.Previous != nil {
			ln.Previous = d.Previous.Name
		}
	}
	ln.Client, ln.Transport = in.src, in.local.transport
	ln.Write(ce)
}

// appendVia appends clb's Via with a branch derived from the request, so
// that a retransmission, its CANCEL and the ACK of a non-2xx answer get the
// same branch and reach the same instance as the INVITE did.
func (p *Proxy) appendVia(dst []byte, self endpoint, v *view, in *inbound) []byte {
	dst = append(dst, "Via: SIP/2.0/"...)
	dst = appendUpper(dst, self.transport)
	dst = append(dst, ' ')
	dst = appendSelf(dst, p.named(self))
	dst = append(dst, ";branch="+branchPrefix...)
	dst = strconv.AppendUint(dst, branchHash(v), 36)
	if p.advertise != "" {
		dst = append(dst, ";"+paramNode+"="...)
		dst = append(dst, p.node...)
	}
	if in.conn != nil {
		dst = append(dst, ";"+paramSource+"="...)
		dst = policy.AppendEscapedKey(dst, in.local.transport)
		dst = append(dst, "%2F"...) // "/"
		dst = policy.AppendEscapedKey(dst, in.src.String())
	}
	return append(dst, crlf...)
}

// appendUpper appends s in upper case (ASCII), without allocating.
func appendUpper(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// branchHash identifies the client transaction of req: its top Via's branch
// and sent-by when the client follows RFC 3261, else (RFC 2543) the fields
// that an INVITE, its CANCEL and its ACK share.
func branchHash(v *view) uint64 {
	var d xxhash.Digest
	d.Reset()
	b, _ := param(v.via.Params, "branch")
	if len(b) > len("z9hG4bK") && strings.HasPrefix(b, "z9hG4bK") {
		d.WriteString(b)
		d.WriteString("\x00")
		d.WriteString(v.via.Host)
		var port [20]byte
		d.Write(strconv.AppendInt(port[:0], int64(v.via.Port), 10))
		d.WriteString(transportName(v.via.Transport))
		return d.Sum64()
	}
	w := v.w
	start := w.data[:w.startLine]
	if sp := bytes.IndexByte(start, ' '); sp >= 0 {
		d.Write(start[sp+1:]) // Request-URI and version
	}
	d.WriteString("\x00")
	d.WriteString(v.callID)
	d.WriteString("\x00")
	d.WriteString(v.fromTag())
	d.WriteString(strconv.FormatUint(uint64(v.cseq), 10))
	if i := w.first(fieldVia); i >= 0 {
		l := w.lines[i]
		d.Write(w.data[l.valueStart:w.firstValueEnd(l)])
	}
	return d.Sum64()
}

// appendRequestFields copies the request's header fields with the edits of a
// proxy: the sender's Via marked with where it came from, Max-Forwards
// decremented (or added), clb's Route and foreign X-CLB-* fields removed.
func appendRequestFields(dst []byte, v *view, in *inbound, e edits) []byte {
	w := v.w
	viaDone, dropRoutes := false, e.dropRoutes
	for _, l := range w.lines {
		switch {
		case l.field == fieldVia && !viaDone:
			viaDone = true
			dst = appendSenderVia(dst, w, l, v.via, in.src)
			continue
		case l.field == fieldMaxForwards:
			dst = append(dst, "Max-Forwards: "...)
			dst = strconv.AppendInt(dst, int64(v.maxFwd-1), 10)
			dst = append(dst, crlf...)
			continue
		case l.field == fieldRoute && dropRoutes > 0:
			dst, dropRoutes = appendRoutesAfter(dst, w, l, dropRoutes)
			continue
		case l.field == fieldCLB && e.dropCLB:
			continue
		}
		dst = append(dst, w.data[l.start:l.end]...)
	}
	if v.maxFwd < 0 {
		dst = append(dst, "Max-Forwards: 70\r\n"...)
	}
	return dst
}

// appendRestValues appends field l without its first value, or nothing if
// that was its only one.
func appendRestValues(dst []byte, w *wire, l line, name string) []byte {
	comma := w.firstValueEnd(l)
	if comma == l.valueEnd {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, w.data[w.restStart(l, comma):l.valueEnd]...)
	return append(dst, crlf...)
}

// appendSenderVia appends the sender's Via with received and rport set as
// RFC 3261 18.2.1 and RFC 3581 say, so that responses find the way back.
func appendSenderVia(dst []byte, w *wire, l line, v *gosip.ViaHeader, src netip.AddrPort) []byte {
	comma := w.firstValueEnd(l)
	first := w.data[l.valueStart:comma]
	dst = append(dst, "Via: "...)
	_, wantsRport := param(v.Params, "rport")
	host := strings.Trim(v.Host, "[]")
	srcIP := src.Addr().Unmap()
	needReceived := wantsRport
	if ip, err := netip.ParseAddr(host); err != nil || ip.Unmap() != srcIP {
		needReceived = true
	}
	// Copy the value, dropping any received or valueless rport to set them.
	semi := bytes.IndexByte(first, ';')
	if semi < 0 {
		dst = append(dst, first...)
	} else {
		dst = append(dst, first[:semi]...)
		for rest := first[semi+1:]; ; {
			p, next, more := bytes.Cut(rest, []byte(";"))
			name := bytes.TrimSpace(p)
			if eq := bytes.IndexByte(name, '='); eq >= 0 {
				name = bytes.TrimSpace(name[:eq])
			}
			if !(needReceived && policy.EqualFold(name, "received") || wantsRport && policy.EqualFold(name, "rport")) {
				dst = append(dst, ';')
				dst = append(dst, p...)
			}
			if !more {
				break
			}
			rest = next
		}
	}
	if needReceived {
		dst = append(dst, ";received="...)
		dst = srcIP.AppendTo(dst)
	}
	if wantsRport {
		dst = append(dst, ";rport="...)
		dst = strconv.AppendUint(dst, uint64(src.Port()), 10)
	}
	dst = append(dst, crlf...)
	if comma < l.valueEnd {
		dst = append(dst, "Via: "...)
		dst = append(dst, w.data[w.restStart(l, comma):l.valueEnd]...)
		dst = append(dst, crlf...)
	}
	return dst
}

// appendResponse copies a response without its top Via (clb's).
func appendResponse(dst []byte, v *view) []byte {
	w := v.w
	dst = append(dst, w.data[:w.startLine+2]...)
	viaDone := false
	for _, l := range w.lines {
		if l.field == fieldVia && !viaDone {
			viaDone = true
			dst = appendRestValues(dst, w, l, "Via: ")
			continue
		}
		dst = append(dst, w.data[l.start:l.end]...)
	}
	dst = append(dst, crlf...)
	return append(dst, v.body...)
}
