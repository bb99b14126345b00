// Package wire is what the floor proxies read of a message: which back end
// a request's CLBKEY cookie hashes to, and a response's Content-Length.
// Pure functions, safe for concurrent use.
package wire

import (
	"bytes"
	"strconv"
)

// Pick hashes the CLBKEY cookie of a request head to one of n back ends.
func Pick(head []byte, n int) int {
	i := bytes.Index(head, []byte("CLBKEY="))
	if i < 0 {
		return 0
	}
	v := head[i+7:]
	if j := bytes.IndexAny(v, ";\r"); j >= 0 {
		v = v[:j]
	}
	h := uint64(14695981039346656037) // FNV-1a
	for _, c := range v {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return int(h % uint64(n))
}

// ContentLength is a response head's Content-Length, 0 if none.
func ContentLength(head []byte) int {
	for _, name := range []string{"\r\nContent-Length: ", "\r\ncontent-length: "} {
		if i := bytes.Index(head, []byte(name)); i >= 0 {
			v := head[i+len(name):]
			v = v[:bytes.IndexByte(v, '\r')]
			if n, err := strconv.Atoi(string(v)); err == nil {
				return n
			}
		}
	}
	return 0
}
