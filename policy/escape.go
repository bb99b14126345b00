package policy

import "strings"

// AppendEscapedKey appends key percent-encoded: every byte outside RFC 3986's
// unreserved set (A-Z a-z 0-9 - . _ ~) as %XX. This is how a key travels in
// X-CLB-Key, in SIP parameters and in cookies (SPEC section 4), so that no
// key can inject a header, a parameter or a delimiter.
func AppendEscapedKey(dst []byte, key string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(key); i++ {
		if c := key[i]; unreserved(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// EscapeKey is AppendEscapedKey to a string.
func EscapeKey(key string) string { return string(AppendEscapedKey(nil, key)) }

// UnescapeKey decodes %XX sequences; ok is false on a malformed one.
func UnescapeKey(s string) (key string, ok bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b, ok := AppendUnescapedKey(make([]byte, 0, len(s)), s)
	if !ok {
		return "", false
	}
	return string(b), true
}

// AppendUnescapedKey appends s with its %XX sequences decoded; ok is false
// on a malformed one.
func AppendUnescapedKey(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			dst = append(dst, s[i])
			continue
		}
		if i+2 >= len(s) {
			return dst, false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return dst, false
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, true
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
