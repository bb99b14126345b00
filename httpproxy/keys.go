package httpproxy

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/url"

	"clb/balancer"
	"clb/config"
)

// Cookie names of SPEC section 5.
const (
	keyCookie   = "CLBKEY"
	routeCookie = "CLBROUTE"
)

// sessionKey is the key of a request (SPEC section 5): the first rule that
// gives a value, else the CLBKEY cookie, else a new random key. fromCookie is
// the CLBKEY the request carried ("" if none).
type sessionKey struct {
	key        string
	fromCookie string
	ruled      bool // a rule gave it
	minted     bool // new: the request had none
}

func requestKey(rules []config.Rule, h *head) sessionKey {
	var k sessionKey
	if c := cookie(h, keyCookie); c != nil {
		k.fromCookie, _ = balancer.UnescapeKey(string(c))
	}
	for i := range rules {
		if v := rules[i].Finish(ruleValue(&rules[i], h)); v != "" {
			k.key, k.ruled = v, true
			return k
		}
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

// ruleValue is what an HTTP rule's source gives ("" if the request lacks it).
func ruleValue(r *config.Rule, h *head) string {
	switch {
	case r.Header != "":
		v, _, _ := h.getFold(r.Header)
		return string(v)
	case r.Cookie != "":
		return string(cookie(h, r.Cookie))
	case r.Query != "":
		return queryValue(h.target, r.Query)
	case r.RequestURI:
		path, _, _ := bytes.Cut(h.target, []byte("?"))
		return string(path)
	}
	return ""
}

// getFold is get for a name in any case.
func (h *head) getFold(name string) ([]byte, bool, bool) {
	return h.get(lower(name))
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cookie is the value of the first cookie named name in the Cookie fields.
func cookie(h *head, name string) []byte {
	for _, f := range h.fields {
		if !equalFold(f.name, "cookie") {
			continue
		}
		for v := f.value; len(v) > 0; {
			var pair []byte
			pair, v, _ = bytes.Cut(v, []byte(";"))
			k, val, ok := bytes.Cut(bytes.Trim(pair, " \t"), []byte("="))
			if ok && string(k) == name {
				return bytes.Trim(val, `"`)
			}
		}
	}
	return nil
}

// queryValue is the first value of parameter name in the target's query,
// decoded.
func queryValue(target []byte, name string) string {
	_, query, ok := bytes.Cut(target, []byte("?"))
	if !ok {
		return ""
	}
	for len(query) > 0 {
		var pair []byte
		pair, query, _ = bytes.Cut(query, []byte("&"))
		k, v, _ := bytes.Cut(pair, []byte("="))
		if kk, err := url.QueryUnescape(string(k)); err == nil && kk == name {
			vv, err := url.QueryUnescape(string(v))
			if err != nil {
				return ""
			}
			return vv
		}
	}
	return ""
}
