package policy

import (
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// URIUser is the user part of the URI that value holds, as a name-addr
// ("Alice" <sip:alice@host>;tag=1) or an addr-spec; ok false when it holds
// none. The front ends use it for every field they have not parsed already,
// so that one value gives one key in SIP and in HTTP.
func URIUser(value string) (string, bool) {
	var uri gosip.Uri
	if !parseAddress(value, &uri) {
		return "", false
	}
	return uri.User, true
}

// URIParam is parameter name (case-insensitive) of the URI that value holds.
func URIParam(value, name string) (string, bool) {
	var uri gosip.Uri
	if !parseAddress(value, &uri) {
		return "", false
	}
	return Param(uri.UriParams, name)
}

func parseAddress(value string, uri *gosip.Uri) bool {
	if value == "" {
		return false
	}
	params := gosip.NewParams()
	_, err := gosip.ParseAddressValue(value, uri, &params)
	return err == nil
}

// Param looks a parameter up by name, case-insensitively as RFC 3261
// compares parameter names (sipgo's Get is case-sensitive).
func Param(ps gosip.HeaderParams, name string) (string, bool) {
	for _, kv := range ps {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}

// PathParam is parameter name (case-insensitive) of an HTTP path's last
// segment: /cart;jsessionid=ABC gives ABC for jsessionid (RFC 3986 3.3).
func PathParam(path, name string) (string, bool) {
	path, _, _ = strings.Cut(path, "?")
	seg := path[strings.LastIndexByte(path, '/')+1:]
	_, params, ok := strings.Cut(seg, ";")
	for ok {
		var p string
		p, params, ok = strings.Cut(params, ";")
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}
