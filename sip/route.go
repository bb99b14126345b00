package sip

import (
	"net/netip"
	"strconv"
	"strings"
)

// Record-Route parameters clb puts in its own URI (SPEC section 5), and that
// come back in the Route of every in-dialog request.
const (
	paramKey   = "bekey"   // the BEKey, escaped
	paramRoute = "beroute" // the instance that served the dialog, escaped
	paramFTag  = "ftag"    // From tag of the initial request, escaped
	paramDir   = "dir"     // "out" when an instance started the dialog
)

// unreserved is RFC 3986's unreserved set: the bytes escape leaves alone.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// appendEscaped appends s with every byte outside the unreserved set
// percent-encoded, so that no key can inject a header, a parameter or a URI
// delimiter (SPEC section 4).
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		if c := s[i]; unreserved(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// escape is appendEscaped to a string.
func escape(s string) string { return string(appendEscaped(nil, s)) }

// unescape decodes %XX sequences; ok is false on a malformed one.
func unescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// dialogRoute is what clb's Record-Route carries.
type dialogRoute struct {
	key      string // BEKey
	instance string // instance that served the dialog when it began
	ftag     string // From tag of the request that began the dialog
	outbound bool   // an instance began the dialog
}

// appendRecordRoute appends clb's Record-Route header field for a dialog
// through the listener self.
func appendRecordRoute(dst []byte, self endpoint, r dialogRoute) []byte {
	dst = append(dst, "Record-Route: <sip:"...)
	dst = appendHostPort(dst, self.addr)
	dst = append(dst, ";transport="...)
	dst = append(dst, self.transport...)
	dst = append(dst, ";lr;"+paramKey+"="...)
	dst = appendEscaped(dst, r.key)
	dst = append(dst, ";"+paramRoute+"="...)
	dst = appendEscaped(dst, r.instance)
	dst = append(dst, ";"+paramFTag+"="...)
	dst = appendEscaped(dst, r.ftag)
	if r.outbound {
		dst = append(dst, ";"+paramDir+"=out"...)
	}
	return append(dst, ">\r\n"...)
}

// parseDialogRoute decodes clb's parameters from a Route URI's parameter
// lookup; ok is false if the URI is not clb's or a value is malformed.
func parseDialogRoute(get func(string) (string, bool)) (r dialogRoute, ok bool) {
	key, hasKey := get(paramKey)
	if !hasKey {
		return r, false
	}
	inst, _ := get(paramRoute)
	ftag, _ := get(paramFTag)
	dir, _ := get(paramDir)
	var ok1, ok2, ok3 bool
	r.key, ok1 = unescape(key)
	r.instance, ok2 = unescape(inst)
	r.ftag, ok3 = unescape(ftag)
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
