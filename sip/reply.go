package sip

import (
	"bytes"
	"strconv"

	"clb/accesslog"
	"clb/policy"

	"github.com/cespare/xxhash/v2"
)

// refusal is a request clb answers itself instead of forwarding.
type refusal struct {
	code        int
	reason      string
	retryAfter  int    // seconds, for 503
	unsupported string // option tags, for 420
	kind        string // for the error metrics, when not the code's
	key         string // the request's key, when known (for the access log)
}

// reply answers the request itself, back to where it came from on the
// transport it came over: on the same connection (a stream transport), or to
// the source address and port (UDP) as if the client had asked for rport
// (RFC 3581), which works through NAT and trusts no Via. It answers only a
// request with a Via and a CSeq to match the answer to, and never an ACK.
func (p *Proxy) reply(in *inbound, sc *scratch, v *view, r refusal) {
	w := v.w
	if method, _, _ := bytes.Cut(w.data[:w.startLine], sp); string(method) == "ACK" {
		return
	}
	p.metrics.Request("sip", v.method, "", "refused")
	kind := r.kind
	if kind == "" {
		kind = refusalKind(r.code)
	}
	p.metrics.Error("sip", kind)
	if ce := p.access.Check(accesslog.MsgSIP, r.key); ce != nil {
		p.logRequest(ce, in, sc, v, r.key, nil, kind, r.code)
	}
	if w.first(fieldVia) < 0 || w.first(fieldCSeq) < 0 {
		return // nothing to match an answer to
	}
	sc.out = appendLocalResponse(sc.out[:0], w, r)
	p.deliver(sc, destination{endpoint: endpoint{in.local.transport, in.src}, conn: in.conn})
}

// refusalKind names a refusal for the error metrics.
func refusalKind(code int) string {
	switch code {
	case 482:
		return "loop"
	case 483:
		return "max_forwards"
	case 503:
		return "no_instance"
	case 502:
		return "bad_gateway"
	}
	return "malformed"
}

// rejectFraming answers with 400 a message on a stream whose length cannot
// be told (RFC 4475 3.1.2.3, 3.3.8); the caller then closes the connection.
func (p *Proxy) rejectFraming(in *inbound, sc *scratch, w *wire) {
	if bytes.HasPrefix(w.data, []byte("SIP/")) {
		return
	}
	p.reply(in, sc, &view{w: w, request: true}, refusal{code: 400, reason: "Bad Content-Length"})
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
	return policy.EqualFold(s, "sip") || policy.EqualFold(s, "sips") || policy.EqualFold(s, "tel")
}

func isToken(s []byte) bool {
	for _, c := range s {
		if !isTokenChar(c) {
			return false
		}
	}
	return len(s) > 0
}

// isTokenChar is RFC 3261's token character: the fast parsers' class, so
// that what they take and what clb refuses cannot drift apart.
func isTokenChar(c byte) bool { return tokenChar[c] }

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
		if len(v) >= 3 && policy.EqualFold(v[:3], "tag") {
			return true
		}
	}
}
