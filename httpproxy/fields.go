package httpproxy

import (
	"bytes"
	"strconv"

	"clb/policy"
)

// hopByHop are the fields that concern one connection only (RFC 9110 7.6.1),
// plus those clb sets itself on the way to an instance.
func hopByHop(name []byte) bool {
	switch {
	case policy.EqualFold(name, "connection"), policy.EqualFold(name, "keep-alive"), policy.EqualFold(name, "proxy-connection"),
		policy.EqualFold(name, "te"), policy.EqualFold(name, "trailer"), policy.EqualFold(name, "transfer-encoding"),
		policy.EqualFold(name, "upgrade"), policy.EqualFold(name, "content-length"):
		return true
	}
	return false
}

// connectionListed reports whether the head's Connection field names name:
// a field the sender meant for this hop only.
func (h *head) connectionListed(name []byte) bool {
	for _, f := range h.fields {
		if !policy.EqualFold(f.name, "connection") {
			continue
		}
		for v := f.value; len(v) > 0; {
			var item []byte
			item, v, _ = bytes.Cut(v, []byte(","))
			if bytes.EqualFold(bytes.Trim(item, " \t"), name) {
				return true
			}
		}
	}
	return false
}

// appendRequestHead is the head clb sends an instance: the client's fields
// without hop-by-hop ones, X-Forwarded-*, or any X-CLB-* the client sent;
// then the X-Forwarded-* and X-CLB-* fields clb sets, and the framing.
func (x *exchange) appendRequestHead(dst []byte) []byte {
	h := x.h
	dst = append(dst, h.method...)
	dst = append(dst, ' ')
	dst = append(dst, h.target...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	var xff, host []byte
	for _, f := range h.fields {
		switch {
		case policy.EqualFold(f.name, "x-forwarded-for"):
			if xff == nil {
				xff = f.value
			} else {
				xff = append(append(append([]byte(nil), xff...), ", "...), f.value...)
			}
			continue
		case policy.EqualFold(f.name, "host"):
			host = f.value
		case hopByHop(f.name), policy.IsCLBField(f.name), h.connectionListed(f.name),
			policy.EqualFold(f.name, "x-forwarded-proto"), policy.EqualFold(f.name, "x-forwarded-host"), policy.EqualFold(f.name, "expect"):
			continue
		}
		dst = appendField(dst, f.name, f.value)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	if len(xff) > 0 {
		dst = append(dst, xff...)
		dst = append(dst, ", "...)
	}
	dst = append(dst, x.cc.remote...)
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	dst = append(dst, x.s.scheme...)
	dst = append(dst, "\r\nVia: "...)
	dst = append(dst, x.s.via...)
	dst = append(dst, "\r\n"...)
	if host != nil {
		dst = appendField(dst, []byte("X-Forwarded-Host"), host)
	} else {
		// HTTP/1.0 without Host: the request goes on as HTTP/1.1, which
		// needs one.
		dst = append(dst, "Host: "...)
		dst = append(dst, x.d.Owner.HTTP.Addr()...)
		dst = append(dst, "\r\n"...)
	}
	dst = x.appendFields(dst)
	switch {
	case x.f.chunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	case x.f.length > 0 || x.hadLength():
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, x.f.length, 10)
		dst = append(dst, "\r\n"...)
	}
	if x.upgrade {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func (x *exchange) hadLength() bool {
	_, found, _ := x.h.get("content-length")
	return found
}

func appendField(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// appendResponseHead is the head clb sends the client: the instance's status
// and fields without hop-by-hop ones (but for a 101's Upgrade), the framing
// clb passes on, and the session cookies of SPEC section 5.
func (x *exchange) appendResponseHead(dst []byte, closing bool) []byte {
	res := &x.cc.res
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(res.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, res.reason...)
	dst = append(dst, "\r\n"...)
	for _, f := range res.fields {
		if res.status == 101 && (policy.EqualFold(f.name, "upgrade") || policy.EqualFold(f.name, "connection")) {
			dst = appendField(dst, f.name, f.value)
			continue
		}
		if hopByHop(f.name) || res.connectionListed(f.name) {
			continue
		}
		dst = appendField(dst, f.name, f.value)
	}
	if res.status >= 200 {
		rf, _ := res.responseFraming(x.h.method)
		switch {
		case rf.chunked && x.h.minor == 1:
			dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
		case !rf.chunked && rf.length >= 0 && res.status != 204 && res.status != 304:
			if cl, ok, _ := res.get("content-length"); ok {
				dst = appendField(dst, []byte("Content-Length"), cl)
			} else if string(x.h.method) != "HEAD" {
				dst = append(dst, "Content-Length: 0\r\n"...)
			}
		}
		dst = x.appendCookies(dst)
	}
	if closing && res.status != 101 {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}
