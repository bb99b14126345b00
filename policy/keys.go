package policy

import (
	"strings"

	"clb/config"
)

// Source is what key rules read of a request. Header, cookie and parameter
// names reach it as the rules were compiled: header names in lower case and
// in their long form (Compile expands SIP's compact ones), so that an
// implementation compares without folding the rule's name per message.
type Source interface {
	// Method is the request's method.
	Method() string
	// Header is the value of the first field named name; ok false when there
	// is none.
	Header(name string) (value string, ok bool)
	// Cookie is the value of the first cookie named name (case-sensitive).
	Cookie(name string) (value string, ok bool)
	// Query is the first value of query parameter name, percent-decoded.
	Query(name string) (value string, ok bool)
	// RequestURI is the Request-URI (SIP) or request target (HTTP) as
	// received, up to any '?'.
	RequestURI() string
	// URIUser is the user part of the URI that header field holds, or of the
	// request URI when field is ""; ok false when it holds none.
	URIUser(field string) (user string, ok bool)
	// URIParam is parameter name (case-insensitive) of that URI.
	URIParam(field, name string) (value string, ok bool)
}

// Rules are key rules compiled for one front end: tried in order, the first
// that gives a non-empty value is the key.
type Rules struct {
	rules []rule
}

type sourceKind uint8

const (
	fromHeader sourceKind = iota
	fromCookie
	fromQuery
	fromRequestURI
	fromMethod
)

// source is one place a rule or a condition reads.
type source struct {
	kind sourceKind
	name string // header (lower case, long form), cookie or query name
}

type rule struct {
	src      source
	uriUser  bool
	uriParam string
	cfg      *config.Rule // Regexp, Prefix
	when     *condition
}

type condition struct {
	src    source
	exists *bool
	equals *string
	cfg    *config.Condition // Matches
}

// Compile prepares rules, as validated by config, for Key.
func Compile(rules []config.Rule) *Rules {
	out := &Rules{rules: make([]rule, len(rules))}
	for i := range rules {
		r := &rules[i]
		out.rules[i] = rule{
			src:      sourceOf(r.Header, r.Cookie, r.Query, r.RequestURI, false),
			uriUser:  r.URIUser,
			uriParam: r.URIParam,
			cfg:      r,
		}
		if c := r.When; c != nil {
			out.rules[i].when = &condition{
				src:    sourceOf(c.Header, c.Cookie, c.Query, c.RequestURI, c.Method),
				exists: c.Exists,
				equals: c.Equals,
				cfg:    c,
			}
		}
	}
	return out
}

func sourceOf(header, cookie, query string, requestURI, method bool) source {
	switch {
	case header != "":
		return source{fromHeader, strings.ToLower(LongName(header))}
	case cookie != "":
		return source{fromCookie, cookie}
	case query != "":
		return source{fromQuery, query}
	case method:
		return source{kind: fromMethod}
	}
	return source{kind: fromRequestURI}
}

// Len is the number of rules.
func (rs *Rules) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.rules)
}

// Key is the first non-empty key a rule gives src; ok false when none does
// (the front end then applies its default).
func (rs *Rules) Key(src Source) (key string, ok bool) {
	if rs == nil {
		return "", false
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		if r.when != nil && !r.when.holds(src) {
			continue
		}
		if k := r.cfg.Finish(r.value(src)); k != "" {
			return k, true
		}
	}
	return "", false
}

// value is what the rule's source gives, narrowed to a URI's user part or
// parameter when the rule says so; "" when the request lacks it.
func (r *rule) value(src Source) string {
	switch {
	case r.uriUser || r.uriParam != "":
		field := ""
		switch r.src.kind {
		case fromRequestURI:
		case fromHeader:
			field = r.src.name
		default: // a cookie or query value holding a URI
			v, _ := r.src.read(src)
			if r.uriUser {
				u, _ := URIUser(v)
				return u
			}
			p, _ := URIParam(v, r.uriParam)
			return p
		}
		if r.uriUser {
			u, _ := src.URIUser(field)
			return u
		}
		p, _ := src.URIParam(field, r.uriParam)
		return p
	}
	v, _ := r.src.read(src)
	return v
}

func (s source) read(src Source) (string, bool) {
	switch s.kind {
	case fromHeader:
		return src.Header(s.name)
	case fromCookie:
		return src.Cookie(s.name)
	case fromQuery:
		return src.Query(s.name)
	case fromMethod:
		return src.Method(), true
	}
	return src.RequestURI(), true
}

func (c *condition) holds(src Source) bool {
	v, ok := c.src.read(src)
	switch {
	case c.exists != nil:
		return ok == *c.exists
	case c.equals != nil:
		return ok && v == *c.equals
	case c.cfg.Matches.Regexp != nil:
		return ok && c.cfg.Matches.MatchString(v)
	}
	return false
}
