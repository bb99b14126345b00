package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/url"
	"unsafe"

	"clb/policy"
)

// Cookie names of SPEC section 5.
const (
	keyCookie   = "CLBKEY"
	routeCookie = "CLBROUTE"
)

// sessionKey is the key of a request (SPEC section 5): the first rule that
// gives a value, else the CLBKEY cookie, else a new random key. fromCookie is
// the CLBKEY the request carried ("" if none). Both may point into the
// request's head (see head's Source methods): valid while the request is
// handled, which is as long as the session holding them is used.
type sessionKey struct {
	key        string
	fromCookie string
	ruled      bool // a rule gave it
	minted     bool // new: the request had none
}

func requestKey(rules *policy.Rules, req policy.Source) sessionKey {
	var k sessionKey
	if c, ok := req.Cookie(keyCookie); ok {
		k.fromCookie, _ = policy.UnescapeKey(c)
	}
	if v, ok := rules.Key(req); ok {
		k.key, k.ruled = v, true
		return k
	}
	if k.fromCookie != "" {
		k.key = k.fromCookie
		return k
	}
	k.key, k.minted = newKey(), true
	return k
}

// newKey is 128 random bits as 22 characters of unpadded base64url.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// KeySource reads msg, an HTTP request head, as the front end does, for
// key rules applied outside it (tools, and the test that SIP and HTTP give
// one key).
func KeySource(msg []byte) (policy.Source, error) {
	h := new(head)
	if err := readHead(bufio.NewReader(bytes.NewReader(msg)), h, 1<<20, 1000, true); err != nil {
		return nil, err
	}
	return h, nil
}

// head is the key rules' source of an HTTP request. Its strings point into
// the head's buffer, not copies: valid until the next head is read into it.
// The session that keeps them (key, CLBROUTE) lives beside the head in the
// connection's connState, is replaced by the next request's route and
// cleared when the buffers are given back; what outlives a request (the
// access log line, the X-CLB-* fields, Set-Cookie) copies their bytes.
var _ policy.Source = (*head)(nil)

// str is b as a string, without copying: valid only while b is unchanged.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Method is the request's method.
func (h *head) Method() string { return str(h.method) }

// Header is the first field named name (lower case).
func (h *head) Header(name string) (string, bool) {
	v, found, _ := h.get(name)
	return str(v), found
}

// Cookie is the first cookie named name.
func (h *head) Cookie(name string) (string, bool) {
	c := cookie(h, name)
	return str(c), c != nil
}

// Query is the first value of parameter name in the target's query.
func (h *head) Query(name string) (string, bool) { return queryValue(h.target, name) }

// RequestURI is the target as received, up to its query.
func (h *head) RequestURI() string {
	path, _, _ := bytes.Cut(h.target, []byte("?"))
	return str(path)
}

// URIUser is the user of the URI in field. The target itself (field "")
// has none: RFC 9110 4.2.4 forbids userinfo in http(s) URIs.
func (h *head) URIUser(field string) (string, bool) {
	v, ok := h.Header(field)
	if field == "" || !ok {
		return "", false
	}
	return policy.URIUser(v)
}

// URIParam is parameter name of the URI in field, or a path parameter of
// the target (field ""), such as ;jsessionid=.
func (h *head) URIParam(field, name string) (string, bool) {
	if field != "" {
		v, ok := h.Header(field)
		if !ok {
			return "", false
		}
		return policy.URIParam(v, name)
	}
	return policy.PathParam(h.RequestURI(), name)
}

// cookie is the value of the first cookie named name in the Cookie fields.
func cookie(h *head, name string) []byte {
	if h.count[cookieField] == 0 {
		return nil
	}
	for _, f := range h.fields {
		if f.kind != cookieField {
			continue
		}
		for v := f.value; len(v) > 0; {
			var pair []byte
			pair, v, _ = bytes.Cut(v, []byte(";"))
			k, val, ok := bytes.Cut(trimOWS(pair), []byte("="))
			if ok && string(k) == name {
				return bytes.Trim(val, `"`)
			}
		}
	}
	return nil
}

// queryValue is the first value of parameter name in the target's query,
// decoded.
func queryValue(target []byte, name string) (string, bool) {
	_, query, ok := bytes.Cut(target, []byte("?"))
	if !ok {
		return "", false
	}
	for len(query) > 0 {
		var pair []byte
		pair, query, _ = bytes.Cut(query, []byte("&"))
		k, v, _ := bytes.Cut(pair, []byte("="))
		if kk, err := url.QueryUnescape(string(k)); err == nil && kk == name {
			vv, err := url.QueryUnescape(string(v))
			if err != nil {
				return "", false
			}
			return vv, true
		}
	}
	return "", false
}
