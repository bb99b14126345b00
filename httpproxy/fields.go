package httpproxy

import (
	"bytes"
	"strconv"
)

// connectionListed reports whether the head's Connection field names name:
// a field the sender meant for this hop only. Only a Connection field that
// lists names other than close, keep-alive and upgrade needs the walk.
func (h *head) connectionListed(name []byte) bool {
	if !h.conn.others {
		return false
	}
	for _, f := range h.fields {
		if f.kind != connectionField {
			continue
		}
		for v := f.value; len(v) > 0; {
			var item []byte
			item, v, _ = bytes.Cut(v, []byte(","))
			if bytes.EqualFold(trimOWS(item), name) {
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
		case f.kind == xForwardedForField:
			if xff == nil {
				xff = f.value
			} else {
				xff = append(append(append([]byte(nil), xff...), ", "...), f.value...)
			}
			continue
		case f.kind == hostField:
			host = f.value
		case f.kind.hopByHop(), f.kind == clbField, f.kind == xForwardedProtoField, f.kind == xForwardedHostField,
			f.kind == expectField, h.connectionListed(f.name):
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
	case x.f.length > 0 || x.h.count[contentLengthField] > 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, x.f.length, 10)
		dst = append(dst, "\r\n"...)
	}
	if x.upgrade {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func appendField(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// appendResponseHead is the head clb sends the client: the instance's status
// and fields without hop-by-hop ones (but for a 101's Upgrade), the framing
// clb passes on (rf, the response's, for a final response), and the session
// cookies of SPEC section 5.
func (x *exchange) appendResponseHead(dst []byte, closing bool, rf framing) []byte {
	res := &x.cc.res
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(res.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, res.reason...)
	dst = append(dst, "\r\n"...)
	for _, f := range res.fields {
		if res.status == 101 && (f.kind == upgradeField || f.kind == connectionField) {
			dst = appendField(dst, f.name, f.value)
			continue
		}
		if f.kind.hopByHop() || res.connectionListed(f.name) {
			continue
		}
		dst = appendField(dst, f.name, f.value)
	}
	if res.status >= 200 {
		switch {
		case rf.chunked && x.h.minor == 1:
			dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
		case !rf.chunked && rf.length >= 0 && res.status != 204 && res.status != 304:
			if cl, n := res.first(contentLengthField); n > 0 {
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
