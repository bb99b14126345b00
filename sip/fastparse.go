package sip

import (
	"strings"
	"unsafe"

	gosip "github.com/emiago/sipgo/sip"
)

// The proxy reads a Via, From, To and Route field and the Request-URI of
// nearly every message. sipgo's parsers allocate a dozen objects for them;
// the parsers here fill the same sipgo structures without allocating, for
// the plain shape nearly every message has: token parameters, a host name
// or IPv4 address, no quotes, commas, folding or IPv6. Their strings point
// into the message, their parameter slices into the reader's fieldSlots.
// Whatever is outside that shape they leave to sipgo (ok false), so that
// clb accepts, refuses and reads a message exactly as before:
// FuzzFastParse checks that what they take sipgo takes and reads alike.

// fieldSlots is the memory the fast parsers fill: one reader's, reused
// for every message (reset by parse). When it runs out, sipgo parses.
type fieldSlots struct {
	vias   [4]gosip.ViaHeader
	routes [4]gosip.RouteHeader
	from   gosip.FromHeader
	to     gosip.ToHeader
	kv     [32]gosip.HeaderKV

	nVia, nRoute, nKV int
	fromUsed, toUsed  bool
}

func (s *fieldSlots) reset() {
	s.nVia, s.nRoute, s.nKV = 0, 0, 0
	s.fromUsed, s.toUsed = false, false
}

// str is b as a string, without copying: valid only while b is unchanged,
// that is while the message is handled. What outlives it is copied.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// fast parses the value b of a field of kind f, appending what it holds
// to out; ok false means sipgo must (out is then as it was).
func (s *fieldSlots) fast(f field, b []byte, out []gosip.Header) (_ []gosip.Header, ok bool) {
	if s == nil || len(b) == 0 {
		return out, false
	}
	v := str(b)
	switch f {
	case fieldVia:
		// A Via field may hold several values (SIPp's UAS echoes them
		// so). sipgo ends a value at the comma after its parameters: one
		// without any must be the last.
		n, nVia, nKV := len(out), s.nVia, s.nKV
		for {
			value, rest, more := strings.Cut(v, ",")
			if s.nVia == len(s.vias) || more && strings.IndexByte(value, ';') < 0 || !s.via(value, &s.vias[s.nVia]) {
				s.nVia, s.nKV = nVia, nKV
				return out[:n], false
			}
			out = append(out, &s.vias[s.nVia])
			s.nVia++
			if !more {
				return out, true
			}
			v = strings.TrimLeft(rest, " \t")
		}
	case fieldRoute:
		if s.nRoute == len(s.routes) {
			return out, false
		}
		h := &s.routes[s.nRoute]
		var u gosip.Uri
		if _, _, ok := s.nameAddr(v, &u, false); !ok {
			return out, false
		}
		*h = gosip.RouteHeader{Address: u}
		s.nRoute++
		return append(out, h), true
	case fieldFrom, fieldTo:
		used := &s.fromUsed
		if f == fieldTo {
			used = &s.toUsed
		}
		if *used {
			return out, false
		}
		var u gosip.Uri
		name, ps, ok := s.nameAddr(v, &u, true)
		if !ok {
			return out, false
		}
		*used = true
		if f == fieldFrom {
			s.from = gosip.FromHeader{DisplayName: name, Address: u, Params: ps}
			return append(out, &s.from), true
		}
		s.to = gosip.ToHeader{DisplayName: name, Address: u, Params: ps}
		return append(out, &s.to), true
	}
	return out, false
}

// via parses one Via value: protocol/version/transport SP host[:port]
// [;params].
func (s *fieldSlots) via(v string, h *gosip.ViaHeader) bool {
	name, rest, ok1 := cutToken(v, '/')
	version, rest, ok2 := cutToken(rest, '/')
	transport, rest, ok3 := cutToken(rest, ' ')
	if !ok1 || !ok2 || !ok3 {
		return false
	}
	host, port, ps, ok := s.hostPortParams(rest)
	if !ok {
		return false
	}
	*h = gosip.ViaHeader{ProtocolName: name, ProtocolVersion: version, Transport: transport, Host: host, Port: port, Params: ps}
	return true
}

// hostPortParams reads host[:port][;params], as in a Via or a URI.
func (s *fieldSlots) hostPortParams(v string) (host string, port int, ps gosip.HeaderParams, ok bool) {
	host, port, rest, ok := hostPort(v)
	if ok && rest != "" {
		ps, ok = s.params(rest[1:])
	}
	return host, port, ps, ok
}

// hostPort reads host[:port] at the start of v: a host name or IPv4
// address, a port of 1 to 5 digits. rest is "" or starts with ';'.
func hostPort(v string) (host string, port int, rest string, ok bool) {
	i := 0
	for i < len(v) && hostChar[v[i]] {
		i++
	}
	host, rest = v[:i], v[i:]
	if host == "" {
		return "", 0, "", false
	}
	if rest != "" && rest[0] == ':' {
		j := 1
		for j < len(rest) && j <= 5 && '0' <= rest[j] && rest[j] <= '9' {
			port = port*10 + int(rest[j]-'0')
			j++
		}
		if j == 1 {
			return "", 0, "", false
		}
		rest = rest[j:]
	}
	return host, port, rest, rest == "" || rest[0] == ';'
}

// uri parses a sip: or sips: URI: [user@]host[:port][;params], no
// password, headers or slashes.
func (s *fieldSlots) uri(v string, u *gosip.Uri) bool {
	var scheme string
	switch {
	case strings.HasPrefix(v, "sip:"):
		scheme, v = "sip", v[4:]
	case strings.HasPrefix(v, "sips:"):
		scheme, v = "sips", v[5:]
	default:
		return false
	}
	var user string
	if at := strings.IndexByte(v, '@'); at >= 0 {
		// sipgo takes the first '@' anywhere as the user's end: there must
		// be no other.
		user, v = v[:at], v[at+1:]
		if !isPlain(user, userChar) || strings.IndexByte(v, '@') >= 0 {
			return false
		}
	}
	host, port, ps, ok := s.hostPortParams(v)
	if !ok {
		return false
	}
	*u = gosip.Uri{Scheme: scheme, User: user, Host: host, Port: port, UriParams: ps}
	return true
}

// nameAddr parses a From, To or Route value: [display-name] <uri>
// [;params], or uri[;params] without angle brackets. The header
// parameters are read when want is set (a Route's are not kept).
func (s *fieldSlots) nameAddr(v string, u *gosip.Uri, want bool) (display string, ps gosip.HeaderParams, ok bool) {
	var uri, rest string
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		name := v[:lt]
		for i := 0; i < len(name); i++ {
			if c := name[i]; !tokenChar[c] && c != ' ' && c != '\t' {
				return "", nil, false
			}
		}
		gt := strings.IndexByte(v[lt:], '>')
		if gt < 0 {
			return "", nil, false
		}
		display, uri, rest = strings.Trim(name, " \t"), v[lt+1:lt+gt], v[lt+gt+1:]
	} else {
		uri = v
		if semi := strings.IndexByte(v, ';'); semi >= 0 {
			uri, rest = v[:semi], v[semi:]
		}
	}
	if !s.uri(uri, u) {
		return "", nil, false
	}
	if rest == "" {
		return display, nil, true
	}
	if rest[0] != ';' {
		return "", nil, false
	}
	if !want {
		// Checked all the same: sipgo accepts them, but not every shape
		// of them the way this parser reads them.
		mark := s.nKV
		_, ok = s.params(rest[1:])
		s.nKV = mark
		return display, nil, ok
	}
	ps, ok = s.params(rest[1:])
	return display, ps, ok
}

// params parses name[=value] parameters separated by ';', each name and
// value a non-empty token; a repeated name takes the last value, as
// sipgo's HeaderParams.Add does.
func (s *fieldSlots) params(v string) (gosip.HeaderParams, bool) {
	start := s.nKV
	ps := gosip.HeaderParams(s.kv[start:start:len(s.kv)])
	for {
		// key[=val] then ';' or the end, in one pass: '=' and ';' are
		// not token characters.
		i := tokenEnd(v)
		key, val, rest := v[:i], "", v[i:]
		if rest != "" && rest[0] == '=' {
			j := 1 + tokenEnd(rest[1:])
			if j == 1 {
				return nil, false
			}
			val, rest = rest[1:j], rest[j:]
		}
		more := rest != ""
		if key == "" || more && rest[0] != ';' {
			return nil, false
		}
		dup := false
		for i := range ps {
			if ps[i].K == key {
				ps[i].V, dup = val, true
				break
			}
		}
		if !dup {
			if len(ps) == cap(ps) {
				return nil, false // out of slots: sipgo's turn
			}
			ps = append(ps, gosip.HeaderKV{K: key, V: val})
		}
		if !more {
			break
		}
		v = rest[1:]
	}
	s.nKV += len(ps)
	return ps[:len(ps):len(ps)], true
}

// tokenEnd is the length of the run of token characters v starts with.
func tokenEnd(v string) int {
	i := 0
	for i < len(v) && tokenChar[v[i]] {
		i++
	}
	return i
}

// cutToken splits v at sep, which must end a non-empty token v starts
// with: strings.Cut and isPlain in one pass.
func cutToken(v string, sep byte) (token, rest string, ok bool) {
	i := tokenEnd(v)
	if i == 0 || i == len(v) || v[i] != sep {
		return "", "", false
	}
	return v[:i], v[i+1:], true
}

// isPlain reports whether v is non-empty and all of class.
func isPlain(v string, class *[256]bool) bool {
	for i := 0; i < len(v); i++ {
		if !class[v[i]] {
			return false
		}
	}
	return v != ""
}

// Character classes of the fast parsers: RFC 3261 token; a host name or
// IPv4 address; a URI's user part without ':' (a password), ';', '?',
// '/' and ',', which sipgo reads its own ways.
var tokenChar, hostChar, userChar = charClass("-.!%*_+`'~"), charClass("-."), charClass("-_.!~*'()&=+$%")

func charClass(extra string) *[256]bool {
	var c [256]bool
	for b := 0; b < 256; b++ {
		c[b] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte(extra, byte(b)) >= 0
	}
	return &c
}
