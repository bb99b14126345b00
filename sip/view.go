package sip

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"clb/metrics"
	"clb/policy"

	gosip "github.com/emiago/sipgo/sip"
)

// view is what the proxy reads of a message: the start line and the few
// fields a stateless proxy needs, each parsed by sipgo's parser for that
// field from the indexed bytes. Parsing only these, rather than the whole
// message, is most of what keeps clb's CPU per call low; fields the proxy
// does not read go through untouched and unchecked, as RFC 3261 16.3 allows.
type view struct {
	w       *wire
	request bool

	method string    // request
	uri    gosip.Uri // request: the Request-URI
	code   int       // response

	via        *gosip.ViaHeader // top
	via2       *gosip.ViaHeader // the next one (responses)
	from       *gosip.FromHeader
	to         *gosip.ToHeader
	callID     string
	cseq       uint32 // CSeq number
	cseqMethod []byte
	maxFwd     int                // -1 when absent
	route      *gosip.RouteHeader // top Route, nil when none
	body       []byte

	// headers back fieldValues' result, so that parsing a field does not
	// allocate a slice for it.
	headers [4]gosip.Header
	// slots hold what the fast parsers read (fastparse.go): the fields
	// above point into them and into w.data, valid while the message is
	// handled.
	slots *fieldSlots
}

// parse reads what the proxy needs of w into v. For a request it returns
// the refusal to answer with when the request is not fit to forward; for a
// response, ok false means drop it.
func (p *Proxy) parse(w *wire, v *view) (r refusal, ok bool) {
	slots := v.slots
	if slots == nil {
		slots = new(fieldSlots)
	}
	slots.reset()
	*v = view{w: w, maxFwd: -1, slots: slots}
	start := w.data[:w.startLine]
	if bytes.HasPrefix(start, []byte("SIP/")) {
		return refusal{}, p.parseResponse(v, start)
	}
	v.request = true
	r = p.parseRequest(v, start)
	return r, r.code == 0
}

var sp = []byte(" ")

func (p *Proxy) parseResponse(v *view, start []byte) bool {
	version, rest, ok1 := bytes.Cut(start, []byte(" "))
	code, _, ok2 := bytes.Cut(rest, []byte(" "))
	n, err := strconv.Atoi(string(code))
	if !ok1 || !ok2 || string(version) != "SIP/2.0" || len(code) != 3 || err != nil || n < 100 || n > 699 {
		return false
	}
	v.code = n
	vias := p.fieldValues(v, fieldVia, 2)
	if len(vias) < 2 || !p.parseBody(v) || !p.parseCSeq(v) {
		return false
	}
	var ok bool
	v.via, ok = vias[0].(*gosip.ViaHeader)
	v.via2, _ = vias[1].(*gosip.ViaHeader)
	return ok && v.via2 != nil
}

// parseRequest reads a request and applies the checks of RFC 3261 16.3 that
// a stateless proxy can make, and those a hash key needs: one Call-ID and
// one From, so that no key comes from an ambiguous or empty field.
func (p *Proxy) parseRequest(v *view, start []byte) refusal {
	bad := func(reason string) refusal { return refusal{code: 400, reason: reason} }
	w := v.w
	method, rest, ok1 := bytes.Cut(start, sp)
	uri, version, ok2 := bytes.Cut(rest, sp)
	if !ok1 || !ok2 || !isToken(method) || bytes.IndexByte(version, ' ') >= 0 {
		// Answer 416 rather than 400 when the Request-URI has an unknown
		// scheme.
		if scheme, _, ok := bytes.Cut(rest, []byte(":")); ok && ok1 && isToken(method) && isToken(scheme) && !knownScheme(scheme) {
			return refusal{code: 416, reason: "Unsupported URI Scheme"}
		}
		return bad("Malformed Request-Line")
	}
	if v.method = metrics.Method(method); v.method == "other" {
		v.method = string(method) // an extension method, as it is spelt
	}
	if string(version) != "SIP/2.0" {
		if bytes.HasPrefix(version, []byte("SIP/")) {
			return refusal{code: 505, reason: "Version Not Supported"}
		}
		return bad("Malformed Request-Line")
	}
	if scheme, _, ok := bytes.Cut(uri, []byte(":")); ok && isToken(scheme) && !knownScheme(scheme) {
		return refusal{code: 416, reason: "Unsupported URI Scheme"}
	}
	if !v.slots.uri(str(uri), &v.uri) {
		if err := gosip.ParseUri(string(uri), &v.uri); err != nil {
			return bad("Malformed Request-URI")
		}
	}
	if len(v.uri.Headers) > 0 {
		return bad("Headers in Request-URI")
	}
	if h := v.uri.Host; strings.ContainsRune(h, ':') {
		if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err != nil {
			return bad("Bad IPv6 Reference")
		}
	}
	for _, f := range []field{fieldCallID, fieldFrom, fieldTo, fieldCSeq, fieldMaxForwards, fieldContentLength} {
		if w.count(f) > 1 {
			return bad("Duplicate Header Field")
		}
	}
	vias := p.fieldValues(v, fieldVia, 1)
	if len(vias) == 0 {
		return bad("Missing or Malformed Via")
	}
	v.via, _ = vias[0].(*gosip.ViaHeader)
	if from, ok := p.fieldValue(v, fieldFrom).(*gosip.FromHeader); ok {
		v.from = from
	}
	if to, ok := p.fieldValue(v, fieldTo).(*gosip.ToHeader); ok {
		v.to = to
	}
	if v.via == nil || v.from == nil || v.to == nil {
		return bad("Missing or Malformed Via, From or To")
	}
	if i := w.first(fieldCallID); i >= 0 {
		v.callID = str(w.value(w.lines[i]))
	}
	if v.callID == "" {
		return bad("Missing Call-ID")
	}
	if !p.parseCSeq(v) {
		return bad("Missing or Malformed CSeq")
	}
	if !equalFoldBytes(v.cseqMethod, v.method) {
		return bad("CSeq Method Mismatch")
	}
	if i := w.first(fieldMaxForwards); i >= 0 {
		mf, ok := digits(w.value(w.lines[i]), 1<<32-1)
		if !ok {
			return bad("Malformed Max-Forwards")
		}
		v.maxFwd = int(min(mf, 255))
	}
	if !p.parseBody(v) {
		return bad("Bad Content-Length")
	}
	if !validNameAddr(w, fieldFrom) || !validNameAddr(w, fieldTo) {
		return bad("Bad From or To")
	}
	if i := w.first(fieldRoute); i >= 0 {
		rt, ok := p.fieldValue(v, fieldRoute).(*gosip.RouteHeader)
		if !ok {
			return bad("Malformed Route")
		}
		v.route = rt
	}
	if i := w.first(fieldProxyRequire); i >= 0 {
		// clb supports no extension a proxy must understand (16.3 item 5).
		return refusal{code: 420, reason: "Bad Extension", unsupported: string(w.value(w.lines[i]))}
	}
	return refusal{}
}

// parseCSeq reads the one CSeq field: a number below 2^31 (RFC 3261
// 8.1.1.5), white space, a method token.
func (p *Proxy) parseCSeq(v *view) bool {
	i := v.w.first(fieldCSeq)
	if i < 0 {
		return false
	}
	num, method, ok := bytes.Cut(bytes.TrimSpace(unfold(v.w.value(v.w.lines[i]))), sp)
	n, okN := digits(num, 1<<31-1)
	method = bytes.TrimLeft(method, " \t")
	if !ok || !okN || !isToken(method) {
		return false
	}
	v.cseq, v.cseqMethod = uint32(n), method
	return true
}

// parseBody finds the body: Content-Length bytes after the header section,
// or, without a Content-Length (allowed on UDP), the rest of the datagram.
// Bytes beyond it are not part of the message (RFC 3261 18.3).
func (p *Proxy) parseBody(v *view) bool {
	w := v.w
	rest := w.data[min(w.bodyStart, len(w.data)):]
	i := w.first(fieldContentLength)
	if i < 0 {
		v.body = rest
		return true
	}
	n, ok := digits(w.value(w.lines[i]), 1<<31-1)
	if !ok || int(n) > len(rest) || w.bodyStart > len(w.data) {
		return false
	}
	v.body = rest[:n]
	return true
}

// fieldValue is the first value of the first field of kind f, parsed, or nil.
func (p *Proxy) fieldValue(v *view, f field) gosip.Header {
	if hs := p.fieldValues(v, f, 1); len(hs) > 0 {
		return hs[0]
	}
	return nil
}

// fieldValues parses fields of kind f, in order, until it has at least n
// values (a field may carry several); nil if one does not parse. The slice
// is the view's, overwritten by the next call: keep its values, not it.
func (p *Proxy) fieldValues(v *view, f field, n int) []gosip.Header {
	w := v.w
	out := v.headers[:0]
	for _, l := range w.lines {
		if l.field != f {
			continue
		}
		var ok bool
		if out, ok = v.slots.fast(f, w.value(l), out); !ok {
			var err error
			if out, err = p.headers.ParseHeader(out, unfold(w.data[l.start:l.end-2])); err != nil {
				return nil
			}
		}
		if len(out) >= n {
			break
		}
	}
	return out
}

// digits reads a decimal number of at most max, without allocating.
func digits(b []byte, max uint64) (uint64, bool) {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n = n*10 + uint64(c-'0'); n > max {
			return 0, false
		}
	}
	return n, len(b) > 0
}

func equalFoldBytes(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// unfold joins a folded field's continuation lines: a CRLF and the white
// space around it are one SP (RFC 3261 7.3.1).
func unfold(b []byte) []byte {
	if bytes.IndexByte(b, '\n') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\r' && b[i] != '\n' {
			out = append(out, b[i])
			continue
		}
		out = bytes.TrimRight(out, " \t")
		for i+1 < len(b) && isLWS(b[i+1]) {
			i++
		}
		out = append(out, ' ')
	}
	return out
}

// header is the value of the first field named name (lower case, in its
// long form) whether the message writes it long or compact, or nil.
func (w *wire) header(name string) []byte {
	for _, l := range w.lines {
		n := bytes.TrimRight(w.data[l.start:l.nameEnd], " \t")
		if len(n) == 1 && strings.EqualFold(policy.LongName(string(n)), name) || policy.EqualFold(n, name) {
			return w.value(l)
		}
	}
	return nil
}
