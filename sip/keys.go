package sip

import (
	"strings"

	gosip "github.com/emiago/sipgo/sip"

	"clb/config"
)

// requestKey is the BEKey of an out-of-dialog request (or an in-dialog one
// without clb's Route): the first rule that gives a non-empty value, else the
// default, From tag + Call-ID (SPEC section 5).
func requestKey(rules []config.Rule, req *gosip.Request) string {
	for i := range rules {
		if k := rules[i].Finish(ruleValue(&rules[i], req)); k != "" {
			return k
		}
	}
	return fromTag(req) + callID(req)
}

// ruleValue is what a SIP rule's source gives, narrowed to a URI's user part
// or parameter when the rule says so; "" when the request lacks it.
func ruleValue(r *config.Rule, req *gosip.Request) string {
	if r.RequestURI {
		return uriPart(r, &req.Recipient, req.Recipient.String)
	}
	var uri *gosip.Uri
	switch {
	case strings.EqualFold(r.Header, "From") || r.Header == "f":
		if h := req.From(); h != nil {
			uri = &h.Address
		}
	case strings.EqualFold(r.Header, "To") || r.Header == "t":
		if h := req.To(); h != nil {
			uri = &h.Address
		}
	}
	if uri != nil {
		if !r.URIUser && r.URIParam == "" {
			return headerValue(req, r.Header)
		}
		return uriPart(r, uri, uri.String)
	}
	value := headerValue(req, r.Header)
	if value == "" || !r.URIUser && r.URIParam == "" {
		return value
	}
	// Any other header holding a name-addr or addr-spec.
	var parsed gosip.Uri
	params := gosip.NewParams()
	if _, err := gosip.ParseAddressValue(value, &parsed, &params); err != nil {
		return ""
	}
	return uriPart(r, &parsed, parsed.String)
}

// uriPart is the URI's user part or parameter, or all of it.
func uriPart(r *config.Rule, uri *gosip.Uri, whole func() string) string {
	switch {
	case r.URIUser:
		return uri.User
	case r.URIParam != "":
		v, _ := param(uri.UriParams, r.URIParam)
		return v
	}
	return whole()
}

// headerValue is the value of the first header field named name.
func headerValue(req *gosip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
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

func fromTag(req *gosip.Request) string {
	if h := req.From(); h != nil {
		t, _ := param(h.Params, "tag")
		return t
	}
	return ""
}

func toTag(m gosip.Message) string {
	if h := m.To(); h != nil {
		t, _ := param(h.Params, "tag")
		return t
	}
	return ""
}

func callID(m gosip.Message) string {
	if h := m.CallID(); h != nil {
		return string(*h)
	}
	return ""
}
