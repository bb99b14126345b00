package httpproxy

import (
	"net"
	"net/netip"
	"strconv"

	"go.uber.org/zap"

	"clb/config"
	"clb/limits"
)

// flood is the HTTP flood control of SPEC section 12, swapped whole on
// reload.
type flood struct {
	limiter     *limits.Limiter // requests per source; nil: none
	connections int             // open connections per source; 0: no cap
	exempt      []netip.Prefix
}

func newFlood(l config.Limits) *flood {
	c := l.HTTPConfig()
	return &flood{limiter: limits.New(c), connections: l.HTTP.Connections, exempt: c.Exempt}
}

// SetLimits swaps in the flood control of a reloaded configuration: the
// sources' buckets start anew, open connections are counted on.
func (s *Server) SetLimits(l config.Limits) { s.flood.Store(newFlood(l)) }

// sourceOf is the client's address, for flood control.
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// admitConn counts a new connection of src, or refuses it when src has its
// limit open already; s.mu is held.
func (s *Server) admitConn(src netip.Addr) bool {
	f := s.flood.Load()
	if f.connections <= 0 || limits.InAny(f.exempt, src) {
		s.perSource[src]++
		return true
	}
	if s.perSource[src] >= f.connections {
		return false
	}
	s.perSource[src]++
	return true
}

// releaseConn uncounts a connection of src; s.mu is held.
func (s *Server) releaseConn(src netip.Addr) {
	if s.perSource[src]--; s.perSource[src] <= 0 {
		delete(s.perSource, src)
	}
}

// admitRequest applies the source's request rate; false: answered 429,
// and cc.keep says whether the connection stays open for the next request.
// It does when the request had no body (all of it has been read, so the
// next byte is the next request's) and neither side asked to close: SPEC
// 12 asks for 429 with Retry-After, not for a close, and closing made a
// source over its rate cost clb an accept, a close and a goroutine a
// request, where a kept connection costs a read and a write. A request with
// a body is still answered with a close (its body is not read).
func (s *Server) admitRequest(cc *clientConn, fr framing) bool {
	cc.keep = false
	f := s.flood.Load()
	if f.limiter == nil {
		return true
	}
	r := f.limiter.Take(cc.src, false, s.now(cc))
	if r.Verdict == limits.Allow {
		return true
	}
	if r.Log {
		s.log.Warn("source over its HTTP rate", zap.Stringer("source", cc.src), zap.Uint64("limited", r.Limited))
	}
	s.refused(cc, "rate_limited")
	h := &cc.req
	cc.keep = !fr.chunked && fr.length <= 0 && h.minor == 1 && !h.conn.close && !s.isClosing()
	s.answer(cc, 429, "too many requests", cc.keep, "Retry-After: "+strconv.Itoa(f.limiter.RetryAfter()))
	return false
}
