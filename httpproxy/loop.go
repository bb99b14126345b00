package httpproxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
)

// newVia is this server's Via entry (RFC 9110 7.6.3): a pseudonym with 64
// random bits, so that a request that comes back to the same clb (an
// instance address that points at a clb listener, directly or through
// another clb node) is recognised however it was addressed.
func newVia() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "1.1 clb-" + hex.EncodeToString(b[:])
}

// looped reports whether the request passed this server before: its Via
// entry is in one of the request's Via fields.
func (s *Server) looped(h *head) bool {
	if h.count[viaField] == 0 {
		return false
	}
	for _, f := range h.fields {
		if f.kind == viaField && s.via != "" && bytes.Contains(f.value, []byte(s.via)) {
			return true
		}
	}
	return false
}
