package sip

import (
	"bytes"
	"fmt"

	gosip "github.com/emiago/sipgo/sip"

	"clb/policy"
)

// requestKey is the BEKey of an out-of-dialog request (or an in-dialog one
// without clb's Route): the first rule that gives a non-empty value, else the
// default, From tag + Call-ID (SPEC section 5).
// The key is valid while the message is handled, as the view's strings are:
// it points into the message, or into buf when it is made of two fields.
// Nothing keeps a key after that (the proxy is stateless: routing hashes it,
// Record-Route, X-CLB-Key and the access log copy it into their bytes).
func (p *Proxy) requestKey(v *view, sc *scratch) string {
	return requestKey(p.settings.Load().rules, v, &sc.key)
}

func requestKey(rules *policy.Rules, v *view, buf *[]byte) string {
	if k, ok := rules.Key(v); ok {
		return k
	}
	tag := v.fromTag()
	if tag == "" {
		return v.callID
	}
	b := append(append((*buf)[:0], tag...), v.callID...)
	if cap(b) <= maxKeptBuffer {
		*buf = b // kept for the next message; one huge key is not
	}
	return str(b)
}

// KeySource parses msg, a SIP request, as the proxy does, for key rules
// applied outside it (tools, and the test that SIP and HTTP give one key).
// The source reads msg itself: msg must not change while it is used.
func KeySource(msg []byte) (policy.Source, error) {
	p := &Proxy{headers: gosip.DefaultHeadersParser()}
	w, v := new(wire), new(view)
	*w = scan(msg, nil)
	if r, ok := p.parse(w, v); !ok || !v.request {
		return nil, fmt.Errorf("not a request clb forwards: %d %s", r.code, r.reason)
	}
	return v, nil
}

// view is the key rules' source of a SIP request.
var _ policy.Source = (*view)(nil)

// Method is the request's method.
func (v *view) Method() string { return v.method }

// Header is the first field named name (lower case, long form), in its long
// or its compact form.
func (v *view) Header(name string) (string, bool) {
	b := v.w.header(name)
	return string(b), b != nil
}

// Cookie: a SIP request has none (config refuses cookie rules for SIP).
func (v *view) Cookie(string) (string, bool) { return "", false }

// Query: a SIP Request-URI has none (clb refuses one with headers).
func (v *view) Query(string) (string, bool) { return "", false }

// RequestURI is the Request-URI as received.
func (v *view) RequestURI() string {
	start := v.w.data[:v.w.startLine]
	_, rest, _ := bytes.Cut(start, sp)
	uri, _, _ := bytes.Cut(rest, sp)
	uri, _, _ = bytes.Cut(uri, []byte("?"))
	return string(uri)
}

// URIUser is the user part of the Request-URI (field ""), or of the URI in
// the named field; From and To are parsed already.
func (v *view) URIUser(field string) (string, bool) {
	if u := v.parsedURI(field); u != nil {
		return u.User, true
	}
	value, ok := v.Header(field)
	if !ok {
		return "", false
	}
	return policy.URIUser(value)
}

// URIParam is parameter name of the URI URIUser reads.
func (v *view) URIParam(field, name string) (string, bool) {
	if u := v.parsedURI(field); u != nil {
		return policy.Param(u.UriParams, name)
	}
	value, ok := v.Header(field)
	if !ok {
		return "", false
	}
	return policy.URIParam(value, name)
}

func (v *view) parsedURI(field string) *gosip.Uri {
	switch field {
	case "":
		return &v.uri
	case "from":
		return &v.from.Address
	case "to":
		return &v.to.Address
	}
	return nil
}

// param is policy.Param, the name the proxy's many look-ups read best with.
func param(ps gosip.HeaderParams, name string) (string, bool) { return policy.Param(ps, name) }
