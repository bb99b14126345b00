package httpproxy

import (
	"bytes"

	"clb/policy"
)

// checkTarget applies RFC 9112 3.2 and 3.3 and RFC 3986 to the request
// target and Host before anything reaches an instance: Host is one
// uri-host with an optional port (no userinfo, path or list); the target is
// origin-form, asterisk-form for OPTIONS, or absolute-form (http or https)
// agreeing with Host; and every byte of it is one RFC 3986 allows. A
// lenient front end that passes what an instance parses otherwise is how
// cache poisoning and routing confusion start.
func (h *head) checkTarget() error {
	host, n := h.first(hostField)
	found := n > 0
	if found && (len(host) == 0 || !validHost(host)) {
		return bad("malformed Host")
	}
	t := h.target
	switch {
	case t[0] == '/':
		if !validTargetBytes(t) {
			return bad("request target outside RFC 3986")
		}
		return nil
	case len(t) == 1 && t[0] == '*':
		if string(h.method) != "OPTIONS" {
			return bad("asterisk-form target for a method other than OPTIONS")
		}
		return nil
	}
	authority, rest, ok := absoluteAuthority(t)
	switch {
	case !ok:
		return bad("request target is not origin-form or absolute-form")
	case !validHost(authority):
		return bad("malformed authority in the request target")
	case !validTargetBytes(rest):
		return bad("request target outside RFC 3986")
	case found && !bytes.EqualFold(authority, host):
		return bad("request target and Host disagree")
	}
	return nil
}

// absoluteAuthority splits an http or https absolute-form target into its
// authority and the rest.
func absoluteAuthority(t []byte) (authority, rest []byte, ok bool) {
	switch {
	case len(t) > 7 && policy.EqualFold(t[:7], "http://"):
		t = t[7:]
	case len(t) > 8 && policy.EqualFold(t[:8], "https://"):
		t = t[8:]
	default:
		return nil, nil, false
	}
	end := bytes.IndexAny(t, "/?")
	if end < 0 {
		end = len(t)
	}
	return t[:end], t[end:], end > 0
}

// validHost is uri-host [":" port] (RFC 3986 3.2.2): an IP literal in
// brackets, or a reg-name of unreserved characters, percent-encodings and
// sub-delims but the comma (a list of hosts is not one host); no userinfo,
// no path. An empty Host is refused too: every target clb accepts has an
// authority, which HTTP/1.1 puts in Host.
func validHost(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	host, port := b, []byte(nil)
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || !validIPLiteral(b[1:end]) {
			return false
		}
		host, port = b[:end+1], b[end+1:]
		if len(port) > 0 && port[0] != ':' {
			return false
		}
	} else if i := bytes.LastIndexByte(b, ':'); i >= 0 {
		host, port = b[:i], b[i:]
		for _, c := range host {
			if !regNameChar(c) {
				return false
			}
		}
		if !validPercents(host) {
			return false
		}
	} else {
		for _, c := range b {
			if !regNameChar(c) {
				return false
			}
		}
		return validPercents(b)
	}
	if len(port) > 0 {
		port = port[1:]
		if len(port) > 5 {
			return false
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

func validIPLiteral(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

// regNameChar: unreserved / sub-delims but ',' / '%' (checked after).
func regNameChar(c byte) bool {
	return uriChar[c] && c != ',' && c != ':' && c != '@' && c != '/' && c != '?'
}

// validTargetBytes: every byte is an RFC 3986 pchar, '/' or '?', with
// well-formed percent-encodings: no space, control, non-ASCII byte (an
// overlong UTF-8 sequence among them), '#', or the delimiters RFC 3986
// leaves out (" < > [ \ ] ^ ` { | }).
func validTargetBytes(t []byte) bool {
	for _, c := range t {
		if !uriChar[c] {
			return false
		}
	}
	return validPercents(t)
}

func validPercents(b []byte) bool {
	for i := bytes.IndexByte(b, '%'); i >= 0; i = bytes.IndexByte(b, '%') {
		if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
			return false
		}
		b = b[i+3:]
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// uriChar: unreserved, sub-delims, the gen-delims a path or query may hold
// (: @ / ?), and '%'.
var uriChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-._~!$&'()*+,;=:@/?%" {
		t[c] = true
	}
	return t
}()
