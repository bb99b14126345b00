package sip

import (
	"strings"

	gosip "github.com/emiago/sipgo/sip"

	"clb/config"
)

// requestKey is the BEKey of an out-of-dialog request (or an in-dialog one
// without clb's Route): the first rule that gives a non-empty value, else the
// default, From tag + Call-ID (SPEC section 5).
func (p *Proxy) requestKey(v *view) string { return requestKey(p.settings.Load().rules, v) }

func requestKey(rules []config.Rule, v *view) string {
	for i := range rules {
		if k := rules[i].Finish(ruleValue(&rules[i], v)); k != "" {
			return k
		}
	}
	return v.fromTag() + v.callID
}

// ruleValue is what a SIP rule's source gives, narrowed to a URI's user part
// or parameter when the rule says so; "" when the request lacks it.
func ruleValue(r *config.Rule, v *view) string {
	narrow := r.URIUser || r.URIParam != ""
	switch {
	case r.RequestURI:
		return uriPart(r, &v.uri)
	case narrow && strings.EqualFold(longName(r.Header), "From"):
		return uriPart(r, &v.from.Address)
	case narrow && strings.EqualFold(longName(r.Header), "To"):
		return uriPart(r, &v.to.Address)
	}
	value := string(v.w.header(r.Header))
	if value == "" || !narrow {
		return value
	}
	// Any other field holding a name-addr or addr-spec.
	var uri gosip.Uri
	params := gosip.NewParams()
	if _, err := gosip.ParseAddressValue(value, &uri, &params); err != nil {
		return ""
	}
	return uriPart(r, &uri)
}

// uriPart is the URI's user part or parameter, or all of it.
func uriPart(r *config.Rule, uri *gosip.Uri) string {
	switch {
	case r.URIUser:
		return uri.User
	case r.URIParam != "":
		v, _ := param(uri.UriParams, r.URIParam)
		return v
	}
	return uri.String()
}

// param looks a parameter up by name, case-insensitively as RFC 3261
// compares parameter names (sipgo's Get is case-sensitive).
func param(ps gosip.HeaderParams, name string) (string, bool) {
	for _, kv := range ps {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}
