package httpproxy

import (
	"bytes"
	"net"
	"time"

	"clb/accesslog"
)

// request is where an access-logged request started: its time and the bytes
// the connection had sent to the client by then.
type request struct {
	start time.Time
	sent  int64
}

// beginRequest clears what the last request on cc left for the access log.
// It runs only while access logging is on: with it off, a request costs the
// check of Access.On and nothing more.
func (s *Server) beginRequest(cc *clientConn) request {
	cc.ss, cc.status, cc.outcome = session{}, 0, ""
	cc.req.method, cc.req.target = nil, nil // a head that fails to parse sets none
	return request{start: cc.at, sent: cc.dc.written + int64(cc.bw.Buffered())}
}

// logRequest writes the access log line of the request on cc, when its key
// is sampled: the fields are filled only then.
func (s *Server) logRequest(cc *clientConn, r request) {
	ss := &cc.ss
	ce := s.o.Access.Check(accesslog.MsgHTTP, ss.key.key)
	if ce == nil {
		return
	}
	ln := &cc.line
	ln.Reset(false)
	if !ln.Client.IsValid() {
		if a, ok := cc.c.RemoteAddr().(*net.TCPAddr); ok {
			ln.Client = a.AddrPort()
		}
	}
	ln.Method = methodName(cc.req.method)
	ln.Path = cc.req.target
	if q := bytes.IndexByte(ln.Path, '?'); q >= 0 {
		ln.Path = ln.Path[:q]
	}
	ln.Status, ln.Outcome = cc.status, cc.outcome
	ln.Key, ln.Retried = ss.key.key, ss.retried
	if d := &ss.d; d.Owner != nil {
		ln.Instance = d.Owner.Name
		if d.Replica != nil {
			ln.Replica = d.Replica.Name
		}
		if d.Previous != nil {
			ln.Previous = d.Previous.Name
		}
	}
	ln.Bytes = cc.dc.written + int64(cc.bw.Buffered()) - r.sent
	ln.Duration = time.Since(r.start)
	ln.Write(ce)
}

// methodName is the method as a string, as the client sent it: the usual
// ones without allocating.
func methodName(b []byte) string {
	for _, m := range [...]string{"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"} {
		if string(b) == m {
			return m
		}
	}
	return string(b)
}
