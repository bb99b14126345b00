package sip

import (
	"net/netip"
	"strconv"
	"strings"

	"clb/policy"
)

// Record-Route parameters clb puts in its own URI (SPEC section 5), and that
// come back in the Route of every in-dialog request.
const (
	paramKey   = "bekey"   // the BEKey, escaped
	paramRoute = "beroute" // the instance that served the dialog, escaped
	paramFTag  = "ftag"    // From tag of the initial request, escaped
	paramDir   = "dir"     // "out" when an instance started the dialog
)

// dialogRoute is what clb's Record-Route carries.
type dialogRoute struct {
	key      string // BEKey
	instance string // instance that served the dialog when it began
	ftag     string // From tag of the request that began the dialog
	outbound bool   // an instance began the dialog
	flow     string // the client's flow token, in the entry facing a WebSocket client
}

// appendRecordRoute appends clb's Record-Route header field for a dialog
// through the listener self.
func appendRecordRoute(dst []byte, self namedEndpoint, r dialogRoute) []byte {
	dst = append(dst, "Record-Route: <sip:"...)
	dst = appendSelf(dst, self)
	dst = append(dst, ";transport="...)
	dst = append(dst, self.transport...)
	dst = append(dst, ";lr;"+paramKey+"="...)
	dst = policy.AppendEscapedKey(dst, r.key)
	dst = append(dst, ";"+paramRoute+"="...)
	dst = policy.AppendEscapedKey(dst, r.instance)
	dst = append(dst, ";"+paramFTag+"="...)
	dst = policy.AppendEscapedKey(dst, r.ftag)
	if r.outbound {
		dst = append(dst, ";"+paramDir+"=out"...)
	}
	if r.flow != "" {
		dst = append(dst, ";"+paramFlow+"="...)
		dst = append(dst, r.flow...)
	}
	return append(dst, ">\r\n"...)
}

// parseDialogRoute decodes clb's parameters from a Route URI's parameter
// lookup; ok is false if the URI is not clb's or a value is malformed.
// Escaped values are decoded into *buf, which they then point into (as
// the others point into the message): valid until *buf is used again.
func parseDialogRoute(get func(string) (string, bool), buf *[]byte) (r dialogRoute, ok bool) {
	key, hasKey := get(paramKey)
	if !hasKey {
		return r, false
	}
	inst, _ := get(paramRoute)
	ftag, _ := get(paramFTag)
	dir, _ := get(paramDir)
	b := (*buf)[:0]
	unescape := func(s string) (string, bool) {
		if strings.IndexByte(s, '%') < 0 {
			return s, true
		}
		start := len(b)
		var ok bool
		b, ok = policy.AppendUnescapedKey(b, s)
		return str(b[start:]), ok
	}
	var ok1, ok2, ok3 bool
	r.key, ok1 = unescape(key)
	r.instance, ok2 = unescape(inst)
	r.ftag, ok3 = unescape(ftag)
	*buf = b
	r.outbound = dir == "out"
	return r, ok1 && ok2 && ok3 && r.key != ""
}

// appendHostPort appends host:port, the host bracketed if it is IPv6.
func appendHostPort(dst []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	if ip.Is6() {
		dst = append(dst, '[')
		dst = ip.AppendTo(dst)
		dst = append(dst, ']')
	} else {
		dst = ip.AppendTo(dst)
	}
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(a.Port()), 10)
}

// paramNode, in clb's Via with listen.advertise, names the clb node that
// put it there.
const paramNode = "clbn"

// namedEndpoint is a listener as clb names itself: by the advertised host,
// when there is one, with the listener's port.
type namedEndpoint struct {
	endpoint
	host string // "" for the listener's address
}

func (p *Proxy) named(self endpoint) namedEndpoint { return namedEndpoint{self, p.advertise} }

// appendSelf appends host:port of self as clb names it.
func appendSelf(dst []byte, self namedEndpoint) []byte {
	if self.host == "" {
		return appendHostPort(dst, self.addr)
	}
	dst = append(dst, self.host...)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(self.addr.Port()), 10)
}
