package httpproxy

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"clb/metrics"
	"clb/policy"
)

// proxy forwards the request in cc.req to the owner of its key and relays
// the response; false closes the client connection.
func (s *Server) proxy(cc *clientConn) bool {
	x, keep := s.prepare(cc)
	if x == nil {
		return keep
	}
	return x.run()
}

// prepare checks the request in cc.req, admits and routes it: its
// exchange, or nil when clb answered it itself (keep: the connection stays
// open). Nothing has gone to an instance yet; the event loops run it too.
func (s *Server) prepare(cc *clientConn) (x *exchange, keep bool) {
	h := &cc.req
	f, err := h.requestFraming()
	if err != nil {
		var eh *errHead
		errors.As(err, &eh)
		s.refused(cc, "malformed_request")
		s.refuse(cc, eh.status, eh.msg)
		return nil, false
	}
	if _, n := h.first(hostField); n > 1 || n == 0 && h.minor == 1 {
		s.refused(cc, "malformed_request")
		s.refuse(cc, 400, "missing or repeated Host")
		return nil, false
	}
	if !s.admitRequest(cc, f) {
		// Kept open when the 429 ended the exchange cleanly (see
		// admitRequest): a flooder then costs clb a read and a write a
		// request rather than an accept and a close.
		return nil, cc.keep
	}
	if s.looped(h) {
		// An instance address that leads back here: answer, do not
		// forward again (each pass would add a connection and a request).
		s.refused(cc, "loop")
		s.refuse(cc, 508, "loop detected: the instance address leads back to clb")
		return nil, false
	}
	if err := h.checkTarget(); err != nil {
		s.refused(cc, "malformed_request")
		s.refuse(cc, 400, err.Error())
		return nil, false
	}
	// The session lives in cc for the access log to read once the request
	// is done.
	ss := &cc.ss
	now := s.now(cc)
	*ss = route(s.o.Balancer, s.rules.Load(), h, now)
	if ss.d.Owner == nil {
		s.refused(cc, "no_instance")
		s.refuse(cc, 503, "no instance is available", "Retry-After: "+strconv.Itoa(policy.RetryAfterSeconds(s.o.RetryAfter)))
		return nil, false
	}
	s.o.Metrics.Routed(ss.d.Owner.ClusterName(), ss.key.key, now)
	hasBody := f.chunked || f.length > 0
	if hasBody && h.has(expectField, "100-continue") {
		// clb reads the body as soon as it has an instance: say so now
		// rather than relay the instance's 100.
		if _, err := cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil || cc.bw.Flush() != nil {
			return nil, false
		}
	}

	x = &cc.x // in cc, not on the heap per request (the tunnel's goroutine would put it there)
	*x = exchange{s: s, cc: cc, h: h, f: f, session: ss, at: cc.at}
	x.upgrade = h.conn.upgrade && h.has(upgradeField, "websocket")
	return x, false
}

// exchange is one request's way through the instances.
type exchange struct {
	s  *Server
	cc *clientConn
	h  *head
	f  framing
	*session

	at       time.Time // the request's start, for its first attempt's deadlines
	bodyRead bool      // any of the request body left the client's stream
	upgrade  bool
}

func (x *exchange) run() bool {
	up, err := x.send(false)
	return x.finish(up, err)
}

// finish relays the response on up or, with err, handles the failed
// attempt: the replica partner, or an answer of clb's own.
func (x *exchange) finish(up *upConn, err error) bool {
	for {
		if err == nil {
			return x.relay(up)
		}
		owner := x.d.Owner.Name
		var de *errDial
		switch {
		case errors.As(err, &de) || x.resendable(err):
			x.s.report(owner, false)
			// Nothing of the request reached the instance, or it may be
			// sent again: try the replica partner.
			if !x.failover(x.s.o.Balancer, x.s.now(x.cc)) {
				return x.fail(502, "instance unreachable", "unreachable")
			}
			x.s.o.Metrics.Retry("http")
			if x.d.Owner == nil {
				x.s.refused(x.cc, "no_instance")
				x.s.refuse(x.cc, 503, "no instance is available")
				return false
			}
		case errors.Is(err, errClientBody):
			x.s.refused(x.cc, "malformed_body")
			x.s.refuse(x.cc, 400, "malformed request body")
			return false
		case isTimeout(err):
			x.s.report(owner, false)
			return x.fail(504, "instance timed out", "timeout")
		default:
			x.s.report(owner, false)
			return x.fail(502, "instance failed", "instance")
		}
		up, err = x.send(false)
	}
}

// retry finishes an exchange whose first attempt an event loop made on a
// connection under k (reused: from the pool) and that failed with err
// before any byte of a response: as send would have, once more on a new
// connection when the request may be sent again, then as finish.
func (x *exchange) retry(err error, reused bool, k poolKey) bool {
	var up *upConn
	if x.again(err, reused, k) {
		up, err = x.send(true)
	}
	return x.finish(up, err)
}

// resendable reports whether a request that failed with err may go to
// another instance (SPEC section 7): a connection that could not be opened
// (errDial) is handled by the caller; otherwise only a connection the
// instance closed before any byte of a response (errStale: it had closed a
// pooled one, or died under the request), for a request without a body
// and of an idempotent method (RFC 9110 9.2.2). A response that could not
// be parsed, one cut short, bytes beyond a response's framing or a timeout
// (504) are answered, never repeated: the instance did act on the request.
func (x *exchange) resendable(err error) bool {
	return !x.bodyRead && errors.Is(err, errStale) && x.idempotent()
}

func (x *exchange) idempotent() bool {
	switch string(x.h.method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// fail answers with status, counts the failure as kind and closes the
// connection.
func (x *exchange) fail(status int, msg, kind string) bool {
	if ce := x.s.log.Check(zap.DebugLevel, "request failed"); ce != nil {
		ce.Write(zap.Int("status", status), zap.String("reason", msg), zap.String("instance", x.d.Owner.Name))
	}
	x.s.o.Metrics.Request("http", metrics.Method(x.h.method), x.d.Owner.Name, "failed")
	x.s.o.Metrics.Error("http", kind)
	x.cc.outcome = kind
	x.s.refuse(x.cc, status, msg)
	return false
}

// refused counts a request clb answered itself, without an instance.
func (s *Server) refused(cc *clientConn, kind string) {
	s.o.Metrics.Request("http", metrics.Method(cc.req.method), "", "refused")
	s.o.Metrics.Error("http", kind)
	cc.outcome = kind
}

func (s *Server) report(instance string, ok bool) {
	if s.o.Report != nil {
		s.o.Report(instance, ok)
	}
}

var (
	// errStale: a connection the instance closed before any byte of the
	// response came.
	errStale      = errors.New("idle connection closed by the instance")
	errClientBody = errors.New("malformed request body")
	// errBeyondFraming: the instance sent bytes after a response that has
	// no body (RFC 9112 6.3): which request they answer is unknowable.
	errBeyondFraming = errors.New("bytes beyond the response's framing")
)

// send writes the request to its owner (on a new connection with fresh)
// and reads the response head into cc.res. A reused idle connection that
// turns out closed before anything came back is retried once on a new
// connection when the request can be sent again (no body, idempotent
// method); every other failure is returned as it is.
func (x *exchange) send(fresh bool) (*upConn, error) {
	for ; ; fresh = true {
		addr := x.d.Owner.HTTP.Endpoint
		up, reused, err := x.s.pool.get(addr, fresh, x.s.now(x.cc))
		if err != nil {
			return nil, err
		}
		err = x.exchangeHead(up)
		if err == nil {
			return up, nil
		}
		up.c.Close()
		if !x.again(err, reused, poolKey{e: addr}) {
			return nil, err
		}
	}
}

// again reports whether a request whose attempt on a connection under k
// failed with err goes once more, on a new connection: only when the
// instance had closed a reused one (then its other idle ones under k are
// likely closed too, and dropped) and the request can be sent again.
func (x *exchange) again(err error, reused bool, k poolKey) bool {
	if !errors.Is(err, errStale) || !reused {
		return false
	}
	x.s.pool.drop(k)
	return !x.f.chunked && x.f.length <= 0 && x.idempotent()
}

// staleErr marks a failure before any byte of the response: on a pooled
// connection the instance had closed it; on a new one it died under the
// request. A timeout stays a timeout.
func staleErr(err error) error {
	if isTimeout(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errStale, err)
}

// exchangeHead sends the request and reads the response head, skipping 1xx
// (relayed to the client) but for 101.
func (x *exchange) exchangeHead(up *upConn) error {
	l := x.s.o.Limits
	dc := up.dc
	// The request's time is good for its first attempt; a retry, after a
	// dial that may have taken DialTimeout, reads the clock.
	sent := x.at
	if sent.IsZero() {
		sent = time.Now()
	}
	x.at = time.Time{}
	dc.writeProgress(sent, l.WriteTimeout)
	dc.readFrom(time.Time{}, 0)
	if x.appendRequest(up.bw.Buffered() == 0) {
		// The head and what body there is, in one write.
		if _, err := dc.Write(x.cc.out); err != nil {
			return x.writeFailed(err)
		}
	} else if err := x.sendStreamed(up); err != nil {
		return err
	}
	if x.bodyRead {
		sent = time.Now() // the body took its time
	}
	return x.awaitResponse(up, sent)
}

// appendRequest puts the request head in cc.out and, when it may (canInline)
// and the body is small and all read (appendInline), the body after it:
// then inline is true and the whole request is in cc.out.
func (x *exchange) appendRequest(canInline bool) (inline bool) {
	x.cc.out = x.appendRequestHead(x.cc.out[:0])
	if canInline {
		x.cc.out, inline = appendInline(x.cc.out, x.cc.br, x.f)
	}
	if inline {
		x.bodyRead = x.f.length > 0
	}
	return inline
}

// writeFailed is the error of an inline request's failed write: stale
// unless a body went with it.
func (x *exchange) writeFailed(err error) error {
	if x.bodyRead {
		return err
	}
	return staleErr(err)
}

// awaitResponse reads the response head to a request sent at sent,
// skipping 1xx (relayed to the client) but for 101.
func (x *exchange) awaitResponse(up *upConn, sent time.Time) error {
	l := x.s.o.Limits
	dc := up.dc
	dc.readFrom(sent, l.ResponseTimeout)
	for interim := false; ; interim = true {
		if err := readHead(up.br, &x.cc.res, 64<<10, 200, false); err != nil {
			var nothing *errNothing
			if !interim && (errors.Is(err, io.EOF) || errors.As(err, &nothing)) {
				return staleErr(err)
			}
			return err
		}
		if st := x.cc.res.status; st >= 200 || st == 101 {
			break
		}
		// Interim (100, 103): relay it.
		if x.cc.res.status != 100 {
			x.cc.out = x.appendResponseHead(x.cc.out[:0], false, framing{})
			if _, err := x.cc.bw.Write(x.cc.out); err != nil {
				return err
			}
			_ = x.cc.bw.Flush()
		}
	}
	x.responseCame(up, time.Now())
	return nil
}

// responseCame notes a response head received on up at came: the client's
// writes and the body's reads start from it. (A loop gives the time of its
// pass, read already.)
func (x *exchange) responseCame(up *upConn, came time.Time) {
	l := x.s.o.Limits
	up.dc.readProgress(came, l.ResponseTimeout)
	x.cc.dc.writeProgress(came, l.WriteTimeout)
	x.s.report(x.d.Owner.Name, true)
}

// sendStreamed sends the request head in cc.out and its body through up's
// writer.
func (x *exchange) sendStreamed(up *upConn) error {
	if _, err := up.bw.Write(x.cc.out); err != nil {
		return staleErr(err)
	}
	if x.f.chunked || x.f.length > 0 {
		x.bodyRead = true
		if _, err := copyBody(up.bw, x.cc.br, x.f, false); err != nil {
			if errors.Is(err, errBody) || errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
				return errClientBody // the client's fault; this upstream conn is closed
			}
			return err
		}
	}
	if err := up.bw.Flush(); err != nil {
		return x.writeFailed(err)
	}
	return nil
}

// relay sends the response head and body to the client and returns the
// connection to the pool when it ended cleanly.
func (x *exchange) relay(up *upConn) bool {
	res := &x.cc.res
	x.count(x.s.o.Metrics, x.h.method, res.status)
	x.cc.status, x.cc.outcome = res.status, "relayed"
	if res.status == 101 {
		return x.tunnel(up)
	}
	rf, err := res.responseFraming(x.h.method)
	if err != nil {
		up.c.Close()
		return x.fail(502, "malformed response framing", "malformed_response")
	}
	if !rf.chunked && rf.length == 0 && up.br.Buffered() > 0 {
		// A body after a response that has none (HEAD, 204, 304,
		// Content-Length: 0): the instance and clb disagree on where its
		// answer ends.
		up.c.Close()
		return x.fail(502, errBeyondFraming.Error(), "malformed_response")
	}
	// A chunked body cannot go to an HTTP/1.0 client: it goes without its
	// framing, ended by closing.
	dechunk := rf.chunked && x.h.minor == 0
	// Keep the client connection only when the response has a length of its
	// own to pass on.
	keep := x.h.minor == 1 && !x.h.conn.close && !x.s.isClosing() && (rf.chunked || rf.length >= 0)
	x.cc.out = x.appendResponseHead(x.cc.out[:0], !keep, rf)
	inline := false
	if x.cc.bw.Buffered() == 0 {
		x.cc.out, inline = appendInline(x.cc.out, up.br, rf)
	}
	var flushErr error
	if inline {
		// The head and the body, already read, in one write.
		_, flushErr = x.cc.dc.Write(x.cc.out)
	} else {
		if _, err := x.cc.bw.Write(x.cc.out); err != nil {
			up.c.Close()
			return false
		}
		_, err = copyBody(x.cc.bw, up.br, rf, dechunk)
		flushErr = x.cc.bw.Flush()
	}
	// Bytes already read beyond the response's framing answer no request:
	// the connection is not used again.
	upKeep := err == nil && res.minor == 1 && !res.conn.close && (rf.chunked || rf.length >= 0) &&
		up.br.Buffered() == 0
	if upKeep {
		x.s.pool.put(up, x.s.now(x.cc)) // idle from the request's start: retired early rather than late
	} else {
		up.c.Close()
	}
	if err != nil {
		// The head is gone: all that is left is to cut the response short.
		x.cc.outcome = "cut_short"
		if ce := x.s.log.Check(zap.DebugLevel, "response body failed"); ce != nil {
			ce.Write(zap.String("instance", x.d.Owner.Name), zap.Error(err))
		}
		return false
	}
	return keep && flushErr == nil
}

// tunnel relays a WebSocket (or other) upgrade: the 101 to the client, then
// bytes both ways until either side closes.
func (x *exchange) tunnel(up *upConn) bool {
	x.cc.out = x.appendResponseHead(x.cc.out[:0], false, framing{})
	if _, err := x.cc.bw.Write(x.cc.out); err != nil || x.cc.bw.Flush() != nil {
		up.c.Close()
		return false
	}
	// No deadline of the upgrade exchange stays on the tunnel: a WebSocket
	// may be quiet for longer than any HTTP timeout (its ends ping). The
	// readers clear theirs at their next read; writes go to the sockets.
	x.cc.dc.readFrom(time.Time{}, 0)
	up.dc.readProgress(time.Time{}, 0)
	if x.cc.c.SetWriteDeadline(time.Time{}) != nil || up.c.SetWriteDeadline(time.Time{}) != nil {
		up.c.Close()
		return false
	}
	// Either side closing ends the tunnel: close both, so that the other
	// copy stops too.
	var once sync.Once
	stop := func() { up.c.Close(); x.cc.c.Close() }
	done := make(chan struct{})
	go func() {
		// Client to instance, starting with what the client's reader holds.
		_, _ = io.Copy(up.c, x.cc.br)
		once.Do(stop)
		close(done)
	}()
	_, _ = io.Copy(x.cc.c, up.br)
	once.Do(stop)
	<-done
	return false
}
