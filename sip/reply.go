package sip

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	gosip "github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// refusal is a request clb answers itself instead of forwarding.
type refusal struct {
	code        int
	reason      string
	retryAfter  int    // seconds, for 503
	unsupported string // option tags, for 420
}

// checkRequest applies the checks of RFC 3261 16.3 that a stateless proxy can
// make, and those a hash key needs (one Call-ID, one From: SPEC says no key
// may come from an ambiguous or empty field).
func checkRequest(req *gosip.Request, w *wire) refusal {
	bad := func(reason string) refusal { return refusal{code: 400, reason: reason} }
	switch {
	case req.SipVersion != "SIP/2.0":
		return refusal{code: 505, reason: "Version Not Supported"}
	case req.Via() == nil:
		return bad("Missing Via")
	case req.From() == nil || req.To() == nil:
		return bad("Missing From or To")
	case callID(req) == "":
		return bad("Missing Call-ID")
	case req.CSeq() == nil:
		return bad("Missing CSeq")
	case w.count(fieldCallID) > 1 || w.count(fieldFrom) > 1 || w.count(fieldTo) > 1 ||
		w.count(fieldCSeq) > 1 || w.count(fieldMaxForwards) > 1 || w.count(fieldContentLength) > 1:
		return bad("Duplicate Header Field")
	case !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)):
		return bad("CSeq Method Mismatch")
	case !validNameAddr(w, fieldFrom) || !validNameAddr(w, fieldTo):
		return bad("Bad From or To")
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return refusal{code: 416, reason: "Unsupported URI Scheme"}
	}
	if len(req.Recipient.Headers) > 0 {
		return bad("Headers in Request-URI")
	}
	if h := req.Recipient.Host; strings.ContainsRune(h, ':') {
		if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err != nil {
			return bad("Bad IPv6 Reference")
		}
	}
	if i := w.first(fieldProxyRequire); i >= 0 {
		// clb supports no extension a proxy must understand (16.3 item 5).
		return refusal{code: 420, reason: "Bad Extension", unsupported: string(w.value(w.lines[i]))}
	}
	return refusal{}
}

// reply answers req itself, back to where it came from: over the same
// connection (TCP), or to the source address and port (UDP) as if the client
// had asked for rport (RFC 3581), which works through NAT and trusts no
// Via. An ACK is never answered.
func (p *Proxy) reply(in *inbound, sc *scratch, w *wire, req *gosip.Request, r refusal) {
	if strings.EqualFold(string(req.Method), "ACK") {
		return
	}
	sc.out = appendLocalResponse(sc.out[:0], w, r)
	p.deliver(destination{endpoint: endpoint{"udp", in.src}, conn: in.conn}, sc.out)
}

// rejectUnparsed answers with 400 (416 for an unknown Request-URI scheme) a
// request the parser refused, when it has the fields a response needs; it
// drops anything else. Sent back to the source: an unparsed Via is not to be
// trusted.
func (p *Proxy) rejectUnparsed(in *inbound, sc *scratch, w *wire, err error) {
	if ce := p.log.Check(zap.DebugLevel, "unparsable message"); ce != nil {
		ce.Write(zap.Stringer("from", in.src), zap.Error(err))
	}
	start := w.data[:w.startLine]
	method, rest, ok := bytes.Cut(start, []byte(" "))
	if !ok || bytes.HasPrefix(start, []byte("SIP/")) || string(method) == "ACK" {
		return
	}
	for _, f := range []field{fieldVia, fieldFrom, fieldTo, fieldCallID, fieldCSeq} {
		if w.first(f) < 0 {
			return
		}
	}
	r := refusal{code: 400, reason: "Bad Request"}
	if scheme, _, ok := bytes.Cut(rest, []byte(":")); ok && isToken(scheme) && !knownScheme(scheme) {
		r = refusal{code: 416, reason: "Unsupported URI Scheme"}
	}
	sc.out = appendLocalResponse(sc.out[:0], w, r)
	p.deliver(destination{endpoint: endpoint{"udp", in.src}, conn: in.conn}, sc.out)
}

// validNameAddr checks the display name of a From or To field, which the
// parser lets through when it is neither a quoted string nor tokens (RFC
// 4475 3.1.2.16: a proxy must not propagate it).
func validNameAddr(w *wire, f field) bool {
	i := w.first(f)
	if i < 0 {
		return true
	}
	v := w.value(w.lines[i])
	lt := bytes.IndexByte(v, '<')
	if lt < 0 {
		return true
	}
	name := bytes.TrimSpace(v[:lt])
	if len(name) == 0 || name[0] == '"' {
		return true // quoted strings are the parser's to check
	}
	for _, c := range name {
		if !isTokenChar(c) && c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func knownScheme(s []byte) bool {
	return equalFold(s, "sip") || equalFold(s, "sips") || equalFold(s, "tel")
}

func isToken(s []byte) bool {
	for _, c := range s {
		if !isTokenChar(c) {
			return false
		}
	}
	return len(s) > 0
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0
}

// appendLocalResponse builds clb's own response to the request in w: its
// Via, From, To (with a tag), Call-ID and CSeq copied as they came.
func appendLocalResponse(dst []byte, w *wire, r refusal) []byte {
	dst = append(dst, "SIP/2.0 "...)
	dst = strconv.AppendInt(dst, int64(r.code), 10)
	dst = append(dst, ' ')
	dst = append(dst, r.reason...)
	dst = append(dst, crlf...)
	for _, l := range w.lines {
		switch l.field {
		case fieldVia, fieldFrom, fieldCallID, fieldCSeq:
			dst = append(dst, w.data[l.start:l.end]...)
		case fieldTo:
			dst = append(dst, w.data[l.start:l.valueEnd]...)
			if !hasTag(w.value(l)) {
				dst = append(dst, ";tag=clb"...)
				dst = strconv.AppendUint(dst, localTag(w), 36)
			}
			dst = append(dst, crlf...)
		}
	}
	if r.retryAfter > 0 {
		dst = append(dst, "Retry-After: "...)
		dst = strconv.AppendInt(dst, int64(r.retryAfter), 10)
		dst = append(dst, crlf...)
	}
	if r.unsupported != "" {
		dst = append(dst, "Unsupported: "...)
		dst = append(dst, r.unsupported...)
		dst = append(dst, crlf...)
	}
	return append(dst, "Content-Length: 0\r\n\r\n"...)
}

// localTag is a To tag for clb's responses, the same for a retransmission.
func localTag(w *wire) uint64 {
	var d xxhash.Digest
	d.Reset()
	for _, l := range w.lines {
		if l.field == fieldCallID || l.field == fieldFrom || l.field == fieldCSeq {
			d.Write(w.value(l))
		}
	}
	return d.Sum64()
}

// hasTag reports whether a From or To value has a tag parameter: one after
// the URI (past a closing '>' when there is one).
func hasTag(v []byte) bool {
	if i := bytes.LastIndexByte(v, '>'); i >= 0 {
		v = v[i+1:]
	}
	for {
		i := bytes.IndexByte(v, ';')
		if i < 0 {
			return false
		}
		v = bytes.TrimLeft(v[i+1:], " \t")
		if len(v) >= 3 && equalFold(v[:3], "tag") {
			return true
		}
	}
}
